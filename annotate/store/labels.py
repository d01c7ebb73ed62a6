"""Labels: a ranking of a task's responses as tie groups, best first, plus a margin level.

A pairwise label is a ranking of two: ``[[a], [b]]`` (a better) or ``[[a, b]]`` (a tie).
Labels are never deleted. Editing writes a new row and points the old one at it
(``superseded_by``); undoing points the old row at a retraction marker. At most one current
label per (task, annotator): a second one is refused, not silently merged.
"""
from __future__ import annotations

import uuid
from typing import Any, Sequence

import pyarrow as pa

from .db import one, Store, StoreError, canonical_json, content_id
from .items import insert_rows

SOURCES = ("human", "ai")
RETRACTED = "retracted:"


def margin_levels(db: Store) -> dict[str, float]:
    """Level name → numeric margin, strongest first."""
    return {r["level"]: r["value"] for r in
            db.query("SELECT level, value FROM margin_levels ORDER BY strength DESC")}


def check_ranking(ranking: Any, response_ids: Sequence[str]) -> list[list[str]]:
    """A list of non-empty tie groups that names every response of the task exactly once."""
    if not isinstance(ranking, list) or not ranking:
        raise StoreError("ranking must be a non-empty list of tie groups")
    seen: list[str] = []
    out = []
    for i, group in enumerate(ranking):
        if isinstance(group, str):  # allow [a, b, c] as shorthand for [[a], [b], [c]]
            group = [group]
        if not isinstance(group, list) or not group:
            raise StoreError(f"ranking[{i}] must be a non-empty list of response ids")
        for rid in group:
            if not isinstance(rid, str):
                raise StoreError(f"ranking[{i}] holds {rid!r}, not a response id string")
            if rid not in response_ids:
                raise StoreError(f"response {rid!r} is not part of this task")
            if rid in seen:
                raise StoreError(f"response {rid!r} appears twice in the ranking")
            seen.append(rid)
        out.append(list(group))
    missing = [rid for rid in response_ids if rid not in seen]
    if missing:
        raise StoreError(f"the ranking leaves out response {missing[0]!r}")
    return out


def label_row(task: dict, annotator: str, ranking: Any, *, source: str = "human",
              margin_level: str | None = None, levels: dict[str, float] | None = None,
              soft_prob: float | None = None, rationale: str | None = None,
              judge: str | None = None, principle: str | None = None,
              shown_order: Sequence[str] | None = None, duration_ms: int | None = None,
              details: dict | None = None, label_id: str | None = None) -> dict:
    """Validate one label against its task and build the row (``task`` needs id, response_ids)."""
    if not isinstance(annotator, str) or not annotator.strip():
        raise StoreError("annotator must be a non-empty name")
    if source not in SOURCES:
        raise StoreError(f"source must be human or ai, not {source!r}")
    ranking = check_ranking(ranking, task["response_ids"])
    if margin_level is not None:
        if levels is not None and margin_level not in levels:
            raise StoreError(f"margin must be one of {', '.join(levels)}, not {margin_level!r}")
        if len(ranking) == 1:
            margin_level = None  # a tie has no margin
    if soft_prob is not None:
        if len(task["response_ids"]) != 2:
            raise StoreError("soft_prob is for pairwise tasks; put K-way probabilities in details")
        if isinstance(soft_prob, bool) or not isinstance(soft_prob, (int, float)) or not 0 <= soft_prob <= 1:
            raise StoreError(f"soft_prob must be a probability in [0, 1], not {soft_prob!r}")
        soft_prob = float(soft_prob)
    if shown_order is not None and sorted(shown_order) != sorted(task["response_ids"]):
        raise StoreError("shown_order must list the task's responses")
    return {
        "id": label_id or str(uuid.uuid4()),
        "task_id": task["id"], "annotator": annotator, "source": source, "judge": judge,
        "ranking": ranking, "margin_level": margin_level, "soft_prob": soft_prob,
        "rationale": rationale or None, "principle": principle,
        "shown_order": list(shown_order) if shown_order is not None else None,
        "duration_ms": duration_ms,
        "details": None if details is None else canonical_json(details),
    }


def imported_label_id(task_id: str, annotator: str, ranking: list, margin_level: str | None) -> str:
    """Imported labels get content ids, so importing a file twice adds nothing."""
    return content_id("label", task_id, annotator, canonical_json(ranking), margin_level or "")


def add_labels(db: Store, rows: list[dict]) -> int:
    """Insert validated label rows in one transaction; refuse a second current label per annotator.

    Rows whose id already exists are skipped (re-import). Returns how many were new.
    """
    if not rows:
        return 0
    with db.write() as cur:
        return insert_labels(cur, rows)


def insert_labels(cur, rows: list[dict]) -> int:
    keys = [(r["task_id"], r["annotator"]) for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise StoreError(f"two labels for task {dup[0]!r} by {dup[1]!r} in one batch")
    cur.register("_new", pa.table({"id": [r["id"] for r in rows],
                                   "task_id": [k[0] for k in keys],
                                   "annotator": [k[1] for k in keys]}))
    try:
        unknown = one(cur, "SELECT task_id FROM _new ANTI JOIN tasks ON tasks.id = _new.task_id "
                              "LIMIT 1")
        if unknown:
            raise StoreError(f"unknown task id {unknown[0]!r}")
        clash = one(cur, """SELECT n.task_id, n.annotator FROM _new n JOIN labels l
                                 ON l.task_id = n.task_id AND l.annotator = n.annotator
                               WHERE l.superseded_by IS NULL AND l.id <> n.id LIMIT 1""")
    finally:
        cur.unregister("_new")
    if clash:
        raise StoreError(f"task {clash[0]!r} already has a label by {clash[1]!r}; edit that label instead")
    return insert_rows(cur, "labels", rows)


def current_label(db: Store, task_id: str, annotator: str) -> dict | None:
    rows = db.query("SELECT * FROM labels WHERE task_id = ? AND annotator = ? "
                    "AND superseded_by IS NULL", [task_id, annotator])
    return rows[0] if rows else None


def supersede_label(db: Store, old_id: str, new_row: dict, annotator: str | None = None) -> str:
    """Replace a current label by ``new_row``; the old row stays, pointing at the new one."""
    with db.write() as cur:
        old = _current_or_refuse(cur, old_id, annotator)
        if new_row["task_id"] != old[0] or new_row["annotator"] != old[1]:
            raise StoreError("an edit must keep the label's task and annotator")
        insert_rows(cur, "labels", [new_row])
        mark_superseded(cur, [(old_id, new_row["id"])])
        return new_row["id"]


def retract_label(db: Store, label_id: str, annotator: str | None = None) -> None:
    """Undo: the label stops counting but stays in the table."""
    with db.write() as cur:
        _current_or_refuse(cur, label_id, annotator)
        mark_superseded(cur, [(label_id, None)])


def _current_or_refuse(cur, label_id: str, annotator: str | None) -> tuple[str, str]:
    """(task id, annotator) of a current label, or a StoreError saying why it cannot change."""
    old = one(cur, "SELECT task_id, annotator, superseded_by FROM labels WHERE id = ?", [label_id])
    if old is None:
        raise StoreError(f"unknown label id {label_id!r}")
    if old[2] is not None:
        raise StoreError(f"label {label_id!r} was already replaced or undone")
    if annotator is not None and old[1] != annotator:
        raise StoreError(f"label {label_id!r} belongs to another annotator")
    return old[0], old[1]


def mark_superseded(cur, changes: Sequence[tuple[str, str | None]]) -> None:
    """The one write of ``superseded_by``, inside the caller's write transaction; the queue's
    writer, ``supersede_label``, ``retract_label`` and run-folder ingest all come here.

    Each ``(old id, new id)`` points a current label at the label that replaces it (an edit),
    or, with a new id of None, at a fresh retraction marker (an undo). In the order given, and
    only while the old label is current: of two changes to one label the first wins, so an
    edit racing an undo never leaves a label replaced twice.
    """
    if changes:
        # (the row found through the key's index: with both conditions in one WHERE DuckDB
        # scans the table, 12 ms at a million labels against 4 ms)
        cur.executemany("UPDATE labels SET superseded_by = ? WHERE rowid = "
                        "(SELECT rowid FROM labels WHERE id = ?) AND superseded_by IS NULL",
                        [[new if new is not None else RETRACTED + str(uuid.uuid4()), old]
                         for old, new in changes])


def label_history(db: Store, source: str = "both") -> list[dict]:
    """Every label row, superseded and retracted ones included, with its task's context.

    ``ranking`` holds response ids; ``margin`` is the level's numeric value.
    """
    if source not in ("human", "ai", "both"):
        raise StoreError(f"source must be human, ai or both, not {source!r}")
    where, params = ("", []) if source == "both" else ("WHERE l.source = ?", [source])
    return db.query(f"""
        SELECT l.id, l.task_id, t.kind, t.round, t.prompt_id, p.messages AS prompt,
               t.response_ids,
               (SELECT list(r.text ORDER BY list_position(t.response_ids, r.id))
                  FROM responses r WHERE list_contains(t.response_ids, r.id)) AS texts,
               l.ranking, l.annotator, l.source, l.judge, l.principle, l.margin_level,
               m.value AS margin, l.soft_prob, l.rationale, l.shown_order, l.duration_ms,
               l.details, l.created_at, l.superseded_by
        FROM labels l JOIN tasks t ON t.id = l.task_id JOIN prompts p ON p.id = t.prompt_id
        LEFT JOIN margin_levels m ON m.level = l.margin_level
        {where}
        ORDER BY l.created_at, l.id""", params)
