"""Queue orders: the order the queue serves each round's tasks in, and the priorities behind it.

An admin picks an order per round (or for every round) with ``set_queue_order``; it is kept
in ``settings`` under ``queue_order`` as ``{"*": {...}, "<round>": {...}}``, each
``{"order", "rm", "set_by", "set_at"}`` (a round's own choice wins over ``"*"``). ``default``
is the queue's hashed order; the others (``rewardmodel.active``) serve tasks by a rank that a
``queue-order`` job computed and wrote to its run folder's ``priorities.jsonl``, which
``ingest_run_dir`` stores here (``task_priorities``: order, reward model run, task, rank).
The queue's index reads the ranks when it loads (``queue_index``): ``next_task`` itself
never touches them.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from .db import Store, StoreError, one
from .items import get_full_tasks, insert_rows

ORDERS = ("default", "uncertainty", "disagreement", "diverse", "mix")
NEEDS_RM = ("uncertainty", "disagreement", "mix")
SETTING = "queue_order"
ALL_ROUNDS = "*"


def queue_orders(db: Store) -> dict[str, dict]:
    """The chosen orders: ``{"*" or round number as text: {"order", "rm", ...}}``."""
    rows = db.query("SELECT value FROM settings WHERE key = ?", [SETTING])
    if not rows:
        return {}
    value = rows[0]["value"]
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def check_choice(db: Store, order: Any, rm: Any, round_: Any) -> tuple[str, str | None, str]:
    """(order, rm, round key) from an admin's request, or StoreError naming what is wrong."""
    if order not in ORDERS:
        raise StoreError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if round_ is not None and (isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0):
        raise StoreError(f"round must be a round number (0 or more), not {round_!r}")
    if round_ is not None and not one(db.cursor(), "SELECT count(*) FROM tasks WHERE round = ?",
                                      [round_])[0]:
        raise StoreError(f"round {round_} has no tasks")
    if order in NEEDS_RM:
        if not isinstance(rm, str) or not rm:
            raise StoreError(f"the {order} order needs a reward model: give rm, a reward-model "
                             "run id (or an ensemble .json)")
        found = [{"kind": "rm", "status": "done"}] if rm.endswith(".json") else \
            db.query("SELECT kind, status FROM runs WHERE id = ?", [rm])     # (an ensemble file)
        if not found or found[0]["kind"] != "rm":
            raise StoreError(f"rm: {rm!r} is not a reward-model run of this studio")
        if found[0]["status"] != "done":
            raise StoreError(f"rm: run {rm!r} is {found[0]['status']}, not done")
    elif rm not in (None, ""):
        raise StoreError(f"the {order} order uses no reward model: leave rm out")
    return order, (rm or None) if order in NEEDS_RM else None, \
        ALL_ROUNDS if round_ is None else str(round_)


def set_queue_order(db: Store, order: Any, rm: Any = None, round_: Any = None,
                    by: str | None = None) -> dict:
    """Choose the queue's order for one round (``round_``) or every round (None); returns the
    choice. Checked first: the store is unchanged when the request is refused."""
    order, rm, key = check_choice(db, order, rm, round_)
    with db.write() as cur:
        rows = cur.execute("SELECT value FROM settings WHERE key = ?", [SETTING]).fetchall()
        chosen = json.loads(rows[0][0]) if rows else {}
        if key == ALL_ROUNDS:      # every round: the rounds' own choices give way
            chosen = {}
        chosen[key] = {"order": order, "rm": rm, "set_by": by,
                       "set_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        cur.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                    [SETTING, json.dumps(chosen)])
    return {"order": order, "rm": rm, "round": None if key == ALL_ROUNDS else int(key)}


def fully_ranked(db: Store, order: str, rm: str | None, round_: int | None = None) -> bool:
    """Has every task (of the round) a rank under this order and reward model?"""
    where, params = ("WHERE t.round = ?", [round_]) if round_ is not None else ("", [])
    total, ranked = one(db.cursor(), f"""
        SELECT count(*), count(p.task_id) FROM tasks t
        LEFT JOIN task_priorities p ON p.task_id = t.id AND p.order_name = ? AND p.rm = ?
        {where}""", [order, rm or "", *params])
    return total > 0 and ranked == total


def rankings(db: Store) -> list[dict]:
    """What each ranked order is based on: {order, rm, tasks, rounds, run_id, scored_at}."""
    rows = db.query("""SELECT p.order_name AS "order", p.rm, count(*) AS tasks,
                              list(DISTINCT t.round ORDER BY t.round) AS rounds,
                              arg_max(p.run_id, p.scored_at) AS run_id, max(p.scored_at) AS scored_at
                       FROM task_priorities p JOIN tasks t ON t.id = p.task_id
                       GROUP BY p.order_name, p.rm ORDER BY p.order_name, max(p.scored_at) DESC""")
    for r in rows:
        r["rm"] = r["rm"] or None
        r["scored_at"] = str(r["scored_at"])
    return rows


def ranks_for_queue(cur, tasks_round: dict[str, int], chosen: dict[str, dict]) -> dict[str, int]:
    """task id -> its rank under its round's chosen order (tasks whose round has the default
    order, or that no job ranked, are absent). For ``queue_index`` when it loads."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for key, choice in chosen.items():
        if choice.get("order", "default") != "default":
            wanted.setdefault((choice["order"], choice.get("rm") or ""), set()).add(key)
    if not wanted:
        return {}
    ranks: dict[str, int] = {}
    for (order, rm), keys in wanted.items():
        for t, r in cur.execute("SELECT task_id, rank FROM task_priorities "
                                "WHERE order_name = ? AND rm = ?", [order, rm]).fetchall():
            rnd = tasks_round.get(t)
            if rnd is None:
                continue
            key = str(rnd) if str(rnd) in chosen else ALL_ROUNDS
            if key in keys:
                ranks[t] = int(r)
    return ranks


def read_priorities(run_id: str, lines: list[tuple[int, Any]], path: Path) -> list[dict]:
    """priorities.jsonl lines (``{"task_id", "order", "rm", "rank", "score"?, "cluster"?}``) →
    task_priorities rows; a bad line is an error naming it."""
    rows = []
    for n, rec in lines:
        if not isinstance(rec, dict):
            raise StoreError(f"{path}:{n}: (row): expected a JSON object")
        if rec.get("order") not in ORDERS[1:]:
            raise StoreError(f"{path}:{n}: order: must be one of {', '.join(ORDERS[1:])}")
        if not isinstance(rec.get("task_id"), str):
            raise StoreError(f"{path}:{n}: task_id: must be a task id")
        rank = rec.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise StoreError(f"{path}:{n}: rank: must be a whole number (0 = first)")
        score = rec.get("score")
        rows.append({"order_name": rec["order"], "rm": rec.get("rm") or "", "task_id": rec["task_id"],
                     "rank": rank, "score": None if score is None else float(score),
                     "cluster": rec.get("cluster"), "run_id": run_id,
                     "scored_at": dt.datetime.now()})
    return rows


def write_priorities(cur, rows: list[dict]) -> int:
    """Store a job's ranks, replacing earlier ranks of the same order and reward model for
    those tasks (other rounds keep theirs); returns how many rows were new."""
    if not rows:
        return 0
    run_ids = sorted({r["run_id"] for r in rows})
    if one(cur, "SELECT count(*) FROM task_priorities WHERE list_contains(?, run_id)",
           [run_ids])[0] == len(rows):
        return 0                    # ingested before (the watcher looks every few seconds)
    for (order, rm) in {(r["order_name"], r["rm"]) for r in rows}:
        cur.execute("DELETE FROM task_priorities WHERE order_name = ? AND rm = ? "
                    "AND list_contains(?, task_id)",
                    [order, rm, [r["task_id"] for r in rows
                                 if (r["order_name"], r["rm"]) == (order, rm)]])
    return insert_rows(cur, "task_priorities", rows)


def tasks_to_rank(db: Store, round_: int | None = None) -> list[dict]:
    """The tasks a queue-order job ranks (one round's, or every task): ``{id, round,
    messages, response_ids, responses: [{id, text}], ai_ranking}``, ``ai_ranking`` being the newest current
    AI label of the task (None without one), oldest task first."""
    where, params = ("WHERE round = ?", [round_]) if round_ is not None else ("", [])
    ids = [r["id"] for r in db.query(f"SELECT id FROM tasks {where} ORDER BY created_at, id", params)]
    full = get_full_tasks(db, ids)
    ai = {r["task_id"]: r["ranking"] for r in db.query("""
        SELECT task_id, arg_max(ranking, (created_at, id)) AS ranking FROM labels
        WHERE source = 'ai' AND superseded_by IS NULL GROUP BY task_id""")}
    return [{"id": t, "round": full[t]["round"], "messages": full[t]["messages"],
             "response_ids": list(full[t]["response_ids"]),
             "responses": [{"id": r["id"], "text": r["text"]} for r in full[t]["responses"]],
             "ai_ranking": ai.get(t)} for t in ids]
