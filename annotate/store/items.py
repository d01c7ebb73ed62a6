"""Prompts, responses and tasks: validated in Python, written in bulk, ids derived from content."""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import pyarrow as pa

from .db import one, Store, StoreError, canonical_json, content_id

ROLES = ("system", "user", "assistant")
KINDS = ("pairwise", "ranking")
MAX_K = 9


def check_messages(messages: Any) -> list[dict]:
    """A prompt is a chat that ends with the user's turn; return it normalised or raise."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not messages:
        raise StoreError("messages must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise StoreError(f"messages[{i}] must be an object with exactly 'role' and 'content'")
        if m["role"] not in ROLES:
            raise StoreError(f"messages[{i}].role must be one of {', '.join(ROLES)}, not {m['role']!r}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise StoreError(f"messages[{i}].content must be a non-empty string")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise StoreError("messages must end with a 'user' turn (the turn being answered)")
    return out


def prompt_id(messages: list[dict]) -> str:
    return canonical_prompt_id(canonical_json(messages))


def canonical_prompt_id(text: str) -> str:
    """A prompt's id from its canonical messages JSON (``prompt_row(...)["messages"]``)."""
    return content_id("prompt", text)


def response_id(pid: str, text: str) -> str:
    return content_id("response", pid, text)


def task_id(kind: str, pid: str, response_ids: Sequence[str]) -> str:
    return content_id("task", kind, pid, *sorted(response_ids))


def insert_rows(cur, table: str, rows: list[dict], fresh: bool = False) -> int:
    """Bulk insert of the rows not stored yet; returns how many were new.

    ``fresh``: the rows are new by construction (random ids: the queue's labels), so they go
    in with a plain INSERT and a clash on the table's key raises. The anti-join below reads
    the whole id column of the table, whose cost grows with it (45 ms per insert at a million
    labels, against 3 ms without it; BENCHMARKS.md, *How cost grows*).

    Rows with an ``id`` are new when no stored row has that id (an anti-join: prompts and
    responses have no key to conflict on since schema 4; the first of two rows with one id
    wins); other tables (``run_inputs``) skip rows whose primary key exists. That is what makes
    re-importing a file a no-op. Rows must all have the same keys. A few rows go in as one
    VALUES list (the queue's group commit writes a handful at a time), more through Arrow.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    if "id" in columns:
        first: dict[str, dict] = {}
        for r in rows:
            first.setdefault(r["id"], r)
        rows = list(first.values())
    names = ", ".join(columns)
    # DuckDB answers an INSERT with the number of rows it inserted (ignored ones excluded)
    new_only = f"ANTI JOIN {table} USING (id)" if "id" in columns and not fresh else ""
    insert = f"INSERT INTO {table}" if new_only or fresh else f"INSERT OR IGNORE INTO {table}"
    if len(rows) <= SMALL_INSERT:
        marks = "(" + ", ".join("?" * len(columns)) + ")"
        return cur.execute(f"{insert} ({names}) SELECT {names} FROM (VALUES "
                           + ", ".join([marks] * len(rows)) + f") AS _incoming({names}) {new_only}",
                           [r[c] for r in rows for c in columns]).fetchall()[0][0]
    arrow = pa.table({c: [r[c] for r in rows] for c in columns})
    cur.register("_incoming", arrow)
    try:
        return cur.execute(f"{insert} ({names}) SELECT {names} FROM _incoming {new_only}").fetchall()[0][0]
    finally:
        cur.unregister("_incoming")


SMALL_INSERT = 16   # up to this many rows a VALUES list beats registering an Arrow table


def prompt_row(messages: Any, source: str | None = None, tags: Iterable[str] = ()) -> dict:
    text = canonical_json(check_messages(messages))
    return {"id": canonical_prompt_id(text), "messages": text,
            "source": source, "tags": [str(t) for t in tags]}


def response_row(pid: str, text: Any, model: str | None = None, adapter: str | None = None,
                 run_id: str | None = None, gen_params: dict | None = None) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise StoreError("response text must be a non-empty string")
    return {"id": response_id(pid, text), "prompt_id": pid, "text": text, "model": model,
            "adapter": adapter, "run_id": run_id,
            "gen_params": None if gen_params is None else canonical_json(gen_params)}


def task_row(pid: str, response_ids: Sequence[str], kind: str | None = None,
             round: int = 0, required_labels: int = 1) -> dict:
    ids = list(response_ids)
    if len(set(ids)) != len(ids):
        raise StoreError("a task lists the same response twice")
    if not 2 <= len(ids) <= MAX_K:
        raise StoreError(f"a task compares 2 to {MAX_K} responses, not {len(ids)}")
    kind = kind or ("pairwise" if len(ids) == 2 else "ranking")
    if kind not in KINDS:
        raise StoreError(f"task kind must be pairwise or ranking, not {kind!r}")
    if kind == "pairwise" and len(ids) != 2:
        raise StoreError("a pairwise task has exactly 2 responses")
    if not isinstance(round, int) or round < 0:
        raise StoreError("round must be a non-negative integer")
    if not isinstance(required_labels, int) or required_labels < 1:
        raise StoreError("required_labels must be a positive integer")
    return {"id": task_id(kind, pid, ids), "prompt_id": pid, "response_ids": ids, "kind": kind,
            "round": round, "required_labels": required_labels}


def add_prompts(db: Store, rows: list[dict]) -> int:
    with db.write() as cur:
        return insert_rows(cur, "prompts", rows)


def add_responses(db: Store, rows: list[dict]) -> int:
    with db.write() as cur:
        _check_known(cur, "prompts", {r["prompt_id"] for r in rows}, "prompt")
        return insert_rows(cur, "responses", rows)


def add_tasks(db: Store, rows: list[dict]) -> int:
    with db.write() as cur:
        _check_tasks(cur, rows)
        return insert_rows(cur, "tasks", rows)


def _check_known(cur, table: str, ids: set[str], what: str) -> None:
    if not ids:
        return
    arrow = pa.table({"id": sorted(ids)})
    cur.register("_ids", arrow)
    try:
        missing = one(cur, f"SELECT id FROM _ids ANTI JOIN {table} USING (id) LIMIT 1")
    finally:
        cur.unregister("_ids")
    if missing:
        raise StoreError(f"unknown {what} id {missing[0]!r}")


def _check_tasks(cur, rows: list[dict]) -> None:
    """Every response of a task exists and answers the task's prompt."""
    _check_known(cur, "prompts", {r["prompt_id"] for r in rows}, "prompt")
    pairs = [(r["prompt_id"], rid) for r in rows for rid in r["response_ids"]]
    if not pairs:
        return
    cur.register("_tr", pa.table({"prompt_id": [p for p, _ in pairs], "id": [i for _, i in pairs]}))
    try:
        bad = one(cur, "SELECT t.id, t.prompt_id, r.prompt_id FROM _tr t LEFT JOIN responses r "
                          "USING (id) WHERE r.prompt_id IS DISTINCT FROM t.prompt_id LIMIT 1")
    finally:
        cur.unregister("_tr")
    if bad:
        if bad[2] is None:
            raise StoreError(f"unknown response id {bad[0]!r}")
        raise StoreError(f"response {bad[0]!r} answers prompt {bad[2]!r}, not {bad[1]!r}")


def get_task(db: Store, tid: str) -> dict:
    task = get_full_tasks(db, [tid]).get(tid)
    if task is None:
        raise StoreError(f"unknown task id {tid!r}")
    return task


def get_full_tasks(db: Store, ids: Sequence[str]) -> dict[str, dict]:
    """The known tasks among ``ids`` with their chat and responses, in two queries:
    id → {task columns, messages, responses: [{id, text, model}] in the task's order}."""
    tasks = db.query("SELECT t.*, p.messages FROM tasks t JOIN prompts p ON p.id = t.prompt_id "
                     "WHERE t.id IN (SELECT unnest($ids))", {"ids": list(dict.fromkeys(ids))})
    wanted = [rid for t in tasks for rid in t["response_ids"]]
    texts = {r["id"]: r for r in db.query(
        "SELECT id, text, model FROM responses WHERE id IN (SELECT unnest($ids))", {"ids": wanted})}
    for task in tasks:
        task["messages"] = json.loads(task["messages"])
        task["responses"] = [texts[rid] for rid in task["response_ids"]]
    return {t["id"]: t for t in tasks}


def get_tasks(db: Store, ids: Sequence[str]) -> dict[str, dict]:
    """The known tasks among ``ids``: id → {id, prompt_id, response_ids, kind, round}."""
    rows = db.query("SELECT id, prompt_id, response_ids, kind, round FROM tasks "
                    "WHERE list_contains(?, id)", [list(dict.fromkeys(ids))])
    return {r["id"]: {**r, "response_ids": list(r["response_ids"])} for r in rows}


def list_prompts(db: Store) -> list[dict]:
    """Every prompt (messages parsed), oldest first."""
    rows = db.query("SELECT id, messages, source, tags FROM prompts ORDER BY created_at, id")
    for r in rows:
        r["messages"] = json.loads(r["messages"])
        r["tags"] = list(r["tags"] or [])
    return rows


def list_responses(db: Store) -> list[dict]:
    """Every response (gen_params parsed), oldest first."""
    rows = db.query("SELECT id, prompt_id, text, model, adapter, run_id, gen_params FROM responses "
                    "ORDER BY created_at, id")
    for r in rows:
        r["gen_params"] = None if r["gen_params"] is None else json.loads(r["gen_params"])
    return rows


def list_tasks(db: Store) -> list[dict]:
    rows = db.query("SELECT id, prompt_id, response_ids, kind, round, required_labels FROM tasks "
                    "ORDER BY created_at, id")
    for r in rows:
        r["response_ids"] = list(r["response_ids"])
    return rows


def set_required_labels(db: Store, required: int, task_ids: Sequence[str] | None = None) -> int:
    """The overlap: how many annotators must label each task (all tasks, or the given ones)."""
    if not isinstance(required, int) or required < 1:
        raise StoreError("required labels per task must be a positive integer")
    with db.write() as cur:
        if task_ids is None:
            cur.execute("UPDATE tasks SET required_labels = ?", [required])
            return one(cur, "SELECT count(*) FROM tasks")[0]
        _check_known(cur, "tasks", set(task_ids), "task")
        cur.execute("UPDATE tasks SET required_labels = ? WHERE list_contains(?, id)",
                    [required, list(task_ids)])
        return len(set(task_ids))


def counts(db: Store) -> dict[str, int]:
    return db.query("""SELECT (SELECT count(*) FROM prompts) AS prompts,
                              (SELECT count(*) FROM responses) AS responses,
                              (SELECT count(*) FROM tasks) AS tasks,
                              (SELECT count(*) FROM labels WHERE superseded_by IS NULL) AS labels""")[0]


def prompts_needing_responses(db: Store, k: int, model: str, adapter: str | None = None,
                              limit: int | None = None) -> list[dict]:
    """Prompts with fewer than ``k`` responses from this model (and adapter), oldest first:
    what ``prefstudio generate`` answers when it is given no prompts file.

    Returns ``{"id", "messages", "tags", "have", "texts"}``; ``have`` counts this model's
    responses and ``texts`` holds them (a resumed generation asks only for the rest).
    """
    if not isinstance(k, int) or k < 1:
        raise StoreError("k must be a positive integer")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise StoreError("limit must be a positive integer")
    rows = db.query("""
        SELECT p.id, p.messages, p.tags, count(r.id) AS have,
               list(r.text ORDER BY r.created_at, r.id) FILTER (WHERE r.id IS NOT NULL) AS texts
        FROM prompts p
        LEFT JOIN responses r ON r.prompt_id = p.id AND r.model = ?
                              AND r.adapter IS NOT DISTINCT FROM ?
        GROUP BY p.id, p.messages, p.tags, p.created_at
        HAVING count(r.id) < ?
        ORDER BY p.created_at, p.id
        LIMIT ?""", [model, adapter, k, limit if limit is not None else 2**62])
    for row in rows:
        row["messages"] = json.loads(row["messages"])
        row["texts"] = list(row["texts"] or [])
    return rows
