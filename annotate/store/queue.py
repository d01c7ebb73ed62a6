"""The annotation queue: which task an annotator labels next, claims, skips, submitting.

A task needs labels while its current human labels plus the live claims of *other*
annotators are fewer than its ``required_labels`` (the overlap the admin sets).
``next_task`` picks one such task and records the claim in the same write transaction, and
writes are serialised by the store's lock, so two annotators asking at the same moment can
never both be handed the last open slot. A claim lives ``LEASE_S`` seconds; an annotator who
walks away frees the slot for someone else after that.

Order of service, for one annotator:
    1. the task they already hold (a reload shows the same task),
    2. tasks with the fewest labels + claims (work spreads evenly over tasks),
       in an order hashed per annotator (so annotators do not all queue for the same task),
    3. tasks they skipped, oldest skip first ("skip, and come back later").

Responses are shown in an order shuffled per (annotator, task) but stable across reloads;
``submit_label`` recomputes that order server-side and stores it as ``shown_order``, so
position bias can be measured without trusting the client.
"""
from __future__ import annotations

import hashlib
import random
import weakref
from typing import Any, Sequence

from .db import Store, StoreError, one
from .labels import label_row, margin_levels

LEASE_S = 30 * 60
MAX_RATIONALE = 4000

# Per task: current human labels (mine and everyone's) and live claims of others.
_OPEN_TASKS = """
WITH done AS (
    SELECT task_id, count(*) AS n, count(*) FILTER (WHERE annotator = $u) AS mine
    FROM labels WHERE superseded_by IS NULL AND source = 'human' GROUP BY task_id
),
held AS (
    SELECT task_id, count(*) AS n FROM claims
    WHERE annotator <> $u AND claimed_at > current_timestamp::TIMESTAMP - to_seconds($lease)
    GROUP BY task_id
)
SELECT t.id, coalesce(d.n, 0) + coalesce(h.n, 0) AS taken,
       c.task_id IS NOT NULL AS held_by_me, s.skipped_at
FROM tasks t
LEFT JOIN done d ON d.task_id = t.id
LEFT JOIN held h ON h.task_id = t.id
LEFT JOIN claims c ON c.task_id = t.id AND c.annotator = $u
LEFT JOIN skips s ON s.task_id = t.id AND s.annotator = $u
WHERE coalesce(d.mine, 0) = 0 AND coalesce(d.n, 0) + coalesce(h.n, 0) < t.required_labels
"""


def shown_order(task_id: str, annotator: str, response_ids: Sequence[str]) -> list[str]:
    """The order this annotator sees the task's responses in: random, but the same every time."""
    seed = hashlib.sha256(f"{annotator}\x1f{task_id}".encode()).digest()
    order = list(response_ids)
    random.Random(seed).shuffle(order)
    return order


_ORDER = """
ORDER BY s.skipped_at IS NOT NULL, s.skipped_at, held_by_me DESC, taken, hash(t.id || $u), t.id
LIMIT $n"""

# Is one task still open for this annotator? (the cheap re-check made under the write lock)
_STILL_OPEN = """
SELECT (SELECT required_labels FROM tasks WHERE id = $t)
       - (SELECT count(*) FROM labels WHERE task_id = $t AND superseded_by IS NULL
             AND source = 'human')
       - (SELECT count(*) FROM claims WHERE task_id = $t AND annotator <> $u
             AND claimed_at > current_timestamp::TIMESTAMP - to_seconds($lease)) AS free,
       (SELECT count(*) FROM labels WHERE task_id = $t AND annotator = $u
             AND superseded_by IS NULL AND source = 'human') AS mine
"""


# Per store and annotator: open tasks to try next, in queue order. Only a hint (each is
# re-checked under the write lock), so the full ranking query runs once per HINTS tasks
# instead of on every click.
_hints: "weakref.WeakKeyDictionary[Store, dict[str, list[str]]]" = weakref.WeakKeyDictionary()
HINTS = 32


def _forget_hints(db: Store, annotator: str) -> None:
    _hints.get(db, {}).pop(annotator, None)


def next_task(db: Store, annotator: str, lease_s: int = LEASE_S) -> str | None:
    """Claim and return the id of the next task for ``annotator``, or None when none is left.

    The ranking of all open tasks (which scans every label) runs outside the write lock and
    is kept as a short list of hints; under the lock the annotator's held task, then the
    hints, are re-checked one by one and the first still open is claimed. A slot taken in
    between is passed over, so the same last slot never goes to two annotators.
    """
    params = {"u": annotator, "lease": int(lease_s)}
    hints = _hints.setdefault(db, {})
    for fresh in (False, True):
        if fresh or not hints.get(annotator):
            hints[annotator] = [r[0] for r in db.cursor().execute(
                _OPEN_TASKS + _ORDER, {**params, "n": HINTS}).fetchall()]
        todo = hints[annotator]
        with db.write() as cur:
            held = [r[0] for r in cur.execute("SELECT task_id FROM claims WHERE annotator = ?",
                                              [annotator]).fetchall()]
            chosen = None
            for task_id in held + list(todo):
                if task_id in todo:
                    todo.remove(task_id)
                free, mine = one(cur, _STILL_OPEN, {**params, "t": task_id})
                if free is not None and free > 0 and mine == 0:
                    chosen = task_id
                    break
            # one live claim per annotator: taking a new task releases the previous one;
            # a task already held keeps its claim time, so the duration covers a page reload
            cur.execute("DELETE FROM claims WHERE annotator = ? AND task_id IS DISTINCT FROM ?",
                        [annotator, chosen])
            if chosen is not None:
                cur.execute("INSERT INTO claims (task_id, annotator) VALUES (?, ?) "
                            "ON CONFLICT DO NOTHING", [chosen, annotator])
                return chosen
    return None


def skip_task(db: Store, annotator: str, task_id: str) -> None:
    """Give the task back; it returns to this annotator only after every unskipped task."""
    _forget_hints(db, annotator)  # the skipped task must now come last
    with db.write() as cur:
        if not one(cur, "SELECT 1 FROM tasks WHERE id = ?", [task_id]):
            raise StoreError(f"unknown task id {task_id!r}")
        cur.execute("DELETE FROM claims WHERE task_id = ? AND annotator = ?", [task_id, annotator])
        cur.execute("INSERT INTO skips (task_id, annotator) VALUES (?, ?) "
                    "ON CONFLICT DO UPDATE SET skipped_at = excluded.skipped_at",
                    [task_id, annotator])


def submit_label(db: Store, annotator: str, task_id: str, ranking: Any, *,
                 margin_level: str | None = None, rationale: str | None = None,
                 duration_ms: int | None = None, levels: dict[str, float] | None = None) -> dict:
    """Label a task handed to ``annotator``; a second submit for the same task is an edit.

    Allowed when the annotator holds a claim on the task (from ``next_task``) or has labelled
    it before (edit, or a redo after undo). The previous current label, if any, is superseded
    (never deleted). ``duration_ms`` defaults to the time since the claim was made.
    Returns ``{"label_id", "task_id", "superseded"}``.

    This is the hot path of every annotator's click, so it runs few statements: one read of
    the task, then one transaction that reads claim and history at once and writes the label.
    """
    if not isinstance(task_id, str) or not task_id:
        raise StoreError("task_id must be a task id string")
    if rationale is not None and len(rationale) > MAX_RATIONALE:
        raise StoreError(f"the rationale is longer than {MAX_RATIONALE} characters")
    found = db.query("SELECT id, kind, response_ids FROM tasks WHERE id = ?", [task_id])
    if not found:
        raise StoreError(f"unknown task id {task_id!r}")
    task = found[0]
    levels = levels if levels is not None else margin_levels(db)
    if task["kind"] == "ranking" and margin_level:
        raise StoreError("margins are for pairwise tasks; a ranking has none")
    row = label_row(task, annotator, ranking, margin_level=margin_level or None, levels=levels,
                    rationale=rationale, duration_ms=duration_ms,
                    shown_order=shown_order(task_id, annotator, task["response_ids"]))
    with db.write() as cur:
        held_ms, history, current = one(cur, """
            SELECT (SELECT epoch_ms(current_timestamp::TIMESTAMP) - epoch_ms(claimed_at)
                      FROM claims WHERE task_id = $t AND annotator = $u),
                   (SELECT count(*) FROM labels WHERE task_id = $t AND annotator = $u),
                   (SELECT any_value(id) FROM labels
                     WHERE task_id = $t AND annotator = $u AND superseded_by IS NULL)""",
            {"t": task_id, "u": annotator})
        if held_ms is None and not history:
            raise StoreError(f"task {task_id!r} was not handed to {annotator!r}: ask next_task for it")
        if row["duration_ms"] is None and held_ms is not None:
            row["duration_ms"] = int(held_ms)
        if current:  # an edit: the old label stays, pointing at the new one
            cur.execute("UPDATE labels SET superseded_by = ? WHERE id = ?", [row["id"], current])
        cur.execute(f"INSERT INTO labels ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()))
        cur.execute("DELETE FROM claims WHERE task_id = ? AND annotator = ?", [task_id, annotator])
        cur.execute("DELETE FROM skips WHERE task_id = ? AND annotator = ?", [task_id, annotator])
    return {"label_id": row["id"], "task_id": task_id, "superseded": current}


def progress(db: Store, annotator: str, lease_s: int = LEASE_S) -> dict[str, int]:
    """What the progress bar shows: labels done today, done in total, tasks left for this annotator."""
    mine = db.query("""SELECT count(*) FILTER (WHERE created_at >= current_date) AS done_today,
                              count(*) AS done_total
                       FROM labels WHERE annotator = ? AND superseded_by IS NULL
                         AND source = 'human'""", [annotator])[0]
    left = db.cursor().execute(f"SELECT count(*) FROM ({_OPEN_TASKS})",
                               {"u": annotator, "lease": int(lease_s)}).fetchall()[0][0]
    return {"done_today": int(mine["done_today"]), "done_total": int(mine["done_total"]),
            "left": int(left)}


def my_labels(db: Store, annotator: str, limit: int = 20) -> list[dict]:
    """This annotator's current labels, newest first (never anyone else's)."""
    return db.query("""SELECT l.id AS label_id, l.task_id, t.kind, l.ranking, l.margin_level,
                              l.rationale, l.created_at
                       FROM labels l JOIN tasks t ON t.id = l.task_id
                       WHERE l.annotator = ? AND l.superseded_by IS NULL AND l.source = 'human'
                       ORDER BY l.created_at DESC, l.id LIMIT ?""", [annotator, int(limit)])


def open_claims(db: Store) -> list[dict]:
    return db.query("SELECT task_id, annotator, claimed_at FROM claims ORDER BY claimed_at")
