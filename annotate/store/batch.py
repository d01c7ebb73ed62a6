"""Bulk writes: a whole import file, or the rows of a job's run folder, in one transaction.

``write_batch`` inserts already-validated rows (``prompt_row``, ``response_row``, ``task_row``,
``label_row`` output) through Arrow and checks every reference in SQL: a response's prompt,
a task's prompt and responses, a label's task. A failure raises ``RowError`` naming the table
and the row's position, so the caller (``annotate.formats``) can point at the file's line;
the transaction rolls back and the database is exactly as before.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .db import Store, StoreError, one
from .labels import mark_superseded

class RowError(StoreError):
    """Bad row in a batch: ``table`` ("responses", "tasks", "labels"...), 0-based ``index``
    into the rows given for that table, and the ``field`` at fault."""

    def __init__(self, message: str, table: str, index: int, field: str):
        super().__init__(message)
        self.table, self.index, self.field = table, index, field


Rows = Union[Sequence[dict], pa.Table]


def write_batch(db: Store, *, prompts: Rows = (), responses: Rows = (), tasks: Rows = (),
                labels: Rows = (), supersede: bool = False) -> dict[str, int]:
    """Insert the rows in one transaction; return how many of each were new.

    Each table's rows are dicts (``prompt_row`` ... ``label_row`` output) or a pyarrow Table
    with those columns (what a bulk import builds, so no Python object per row is needed).
    Rows whose id exists already are skipped (re-import is a no-op); within a batch the first
    row of an id wins. A new label for a (task, annotator) that already has a current label is
    refused, or with ``supersede`` replaces it (the old row points at the new one; labels are
    never deleted).
    """
    with db.write() as cur:
        return write_batch_in(cur, prompts, responses, tasks, labels, supersede)


def write_batch_in(cur, prompts, responses, tasks, labels, supersede) -> dict[str, int]:
    prompts, responses, tasks, labels = map(_table, (prompts, responses, tasks, labels))
    with _registered(cur, prompts=prompts, responses=responses, tasks=tasks, labels=labels):
        counts = {"prompts": _insert_new(cur, "prompts", prompts)}
        if responses is not None:
            bad = one(cur, "SELECT min(n._i) FROM _new_responses n ANTI JOIN prompts p ON p.id = n.prompt_id")[0]
            if bad is not None:
                raise RowError(f"unknown prompt id {responses['prompt_id'][bad].as_py()!r}", "responses",
                               bad, "prompt_id")
        counts["responses"] = _insert_new(cur, "responses", responses)
        if tasks is not None:
            _check_task_refs(cur, tasks)
        counts["tasks"] = _insert_new(cur, "tasks", tasks)
        if labels is None:
            counts["labels"] = 0
        elif supersede:
            counts["labels"] = _supersede_labels(cur, labels.drop_columns(["_i"]).to_pylist())
        else:
            counts["labels"] = _insert_labels(cur, labels)
    return counts


def _table(rows: Rows) -> pa.Table | None:
    """The rows as an Arrow table, the first row of each id only, numbered in ``_i`` (0-based
    position, which ``RowError.index`` reports); None when there are none."""
    if isinstance(rows, pa.Table):
        table = rows
    else:
        rows = list(rows)
        if not rows:
            return None
        first: dict[str, dict] = {}
        for r in rows:
            first.setdefault(r["id"], r)
        if len(first) != len(rows):
            rows = list(first.values())
        table = pa.Table.from_pylist(rows)
    if table.num_rows == 0:
        return None
    if pc.count_distinct(table["id"]).as_py() != table.num_rows:
        first = pc.index_in(pc.unique(table["id"]), value_set=table["id"])  # first row of each id
        table = table.take(first.sort())
    return table.append_column("_i", pa.array(np.arange(table.num_rows, dtype=np.int64)))


@contextmanager
def _registered(cur, **tables: pa.Table | None) -> Iterator[None]:
    """Each table visible to SQL as ``_new_<name>`` for the duration."""
    names = [name for name, t in tables.items() if t is not None]
    for name in names:
        cur.register(f"_new_{name}", tables[name])
    try:
        yield
    finally:
        for name in names:
            cur.unregister(f"_new_{name}")


def _insert_new(cur, table: str, rows: pa.Table | None) -> int:
    """Insert the rows (unique by id) whose id the table lacks; returns how many.

    An anti-join then a plain INSERT: ~25% faster than INSERT OR IGNORE for a bulk import.
    """
    if rows is None:
        return 0
    columns = ", ".join(c for c in rows.column_names if c != "_i")
    return one(cur, f"INSERT INTO {table} ({columns}) SELECT {columns} "
                    f"FROM _new_{table} ANTI JOIN {table} USING (id)")[0]


def first_unknown(cur, table: str, ids: list[str]) -> int | None:
    """Position of the first id not in ``table``, or None."""
    if not ids:
        return None
    cur.register("_refs", pa.table({"i": pa.array(range(len(ids)), pa.int64()),
                                    "id": pa.array(ids, pa.string())}))
    try:
        return one(cur, f"SELECT min(i) FROM _refs ANTI JOIN {table} USING (id)")[0]
    finally:
        cur.unregister("_refs")


def _check_task_refs(cur, tasks: pa.Table) -> None:
    """Every task's prompt exists, and every response exists and answers that prompt."""
    bad = one(cur, "SELECT min(n._i) FROM _new_tasks n ANTI JOIN prompts p ON p.id = n.prompt_id")[0]
    if bad is not None:
        raise RowError(f"unknown prompt id {tasks['prompt_id'][bad].as_py()!r}", "tasks", bad, "prompt_id")
    row = one(cur, """SELECT t._i, t.id, r.prompt_id
                      FROM (SELECT _i, prompt_id, unnest(response_ids) AS id FROM _new_tasks) t
                      LEFT JOIN responses r USING (id)
                      WHERE r.prompt_id IS DISTINCT FROM t.prompt_id ORDER BY t._i LIMIT 1""")
    if row:
        i, rid, answers = row
        why = (f"unknown response id {rid!r}" if answers is None else
               f"response {rid!r} answers prompt {answers!r}, not {tasks['prompt_id'][i].as_py()!r}")
        raise RowError(why, "tasks", i, "response_ids")


def _insert_labels(cur, labels: pa.Table) -> int:
    bad = one(cur, "SELECT min(n._i) FROM _new_labels n ANTI JOIN tasks t ON t.id = n.task_id")[0]
    if bad is not None:
        raise RowError(f"unknown task id {labels['task_id'][bad].as_py()!r}", "labels", bad, "task_id")
    second = one(cur, """SELECT min(_i) FROM (
                             SELECT _i, row_number() OVER (PARTITION BY task_id, annotator ORDER BY _i) AS k
                             FROM _new_labels) WHERE k > 1""")[0]
    if second is not None:
        task, annotator = labels["task_id"][second].as_py(), labels["annotator"][second].as_py()
        raise RowError(f"a second label for task {task!r} by {annotator!r} in one batch", "labels",
                       second, "annotator")
    # A row whose id is stored already is a re-import, not a clash (even if it was since edited).
    clash = one(cur, """SELECT min(n._i) FROM (SELECT * FROM _new_labels ANTI JOIN labels USING (id)) n
                        JOIN labels l ON l.task_id = n.task_id AND l.annotator = n.annotator
                        WHERE l.superseded_by IS NULL""")[0]
    if clash is not None:
        task, annotator = labels["task_id"][clash].as_py(), labels["annotator"][clash].as_py()
        raise RowError(f"task {task!r} already has a different label by {annotator!r}", "labels",
                       clash, "annotator")
    return _insert_new(cur, "labels", labels)


def _supersede_labels(cur, labels: list[dict]) -> int:
    """Labels from a run folder: a newer label by the same annotator for the same task replaces
    the current one. Rows already stored (by id) were ingested before: only new ones count."""
    bad = first_unknown(cur, "tasks", [r["task_id"] for r in labels])
    if bad is not None:
        raise RowError(f"unknown task id {labels[bad]['task_id']!r}", "labels", bad, "task_id")
    known = _existing_ids(cur, "labels", [r["id"] for r in labels])
    chains: OrderedDict[tuple[str, str], list[dict]] = OrderedDict()
    for r in labels:
        if r["id"] not in known:
            chains.setdefault((r["task_id"], r["annotator"]), []).append(r)
    if not chains:
        return 0
    current = _current_labels(cur, list(chains))
    rows = _table([r for chain in chains.values() for r in chain])
    with _registered(cur, labels=rows):
        added = _insert_new(cur, "labels", rows)
    # each chain in order: the stored current label, then this folder's labels, oldest first
    changes: list[tuple[str, str]] = []
    for key, chain in chains.items():
        ids = ([current[key]] if key in current else []) + [r["id"] for r in chain]
        changes += zip(ids, ids[1:])
    mark_superseded(cur, changes)
    return added


def _existing_ids(cur, table: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    cur.register("_ids", pa.table({"id": pa.array(ids, pa.string())}))
    try:
        return {r[0] for r in cur.execute(f"SELECT id FROM _ids SEMI JOIN {table} USING (id)").fetchall()}
    finally:
        cur.unregister("_ids")


def _current_labels(cur, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(task_id, annotator) → id of its current label, for the keys that have one."""
    cur.register("_keys", pa.table({"task_id": pa.array([k[0] for k in keys], pa.string()),
                                    "annotator": pa.array([k[1] for k in keys], pa.string())}))
    try:
        rows = cur.execute("""SELECT l.task_id, l.annotator, l.id FROM labels l
                              JOIN _keys k USING (task_id, annotator)
                              WHERE l.superseded_by IS NULL""").fetchall()
    finally:
        cur.unregister("_keys")
    return {(t, a): lid for t, a, lid in rows}
