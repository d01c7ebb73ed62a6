"""Named prompt sets a job can read (``all``, ``round:N``, ``source:NAME``, ``held_out``) and the
few counts the studio's forms show. Held-out prompts are never in a set a policy trains on."""
from __future__ import annotations

import json

from .db import Store, StoreError


def prompt_sets(db: Store) -> list[str]:
    """The names of the sets this store offers, for the Jobs forms."""
    rounds = [r["round"] for r in db.query("SELECT DISTINCT round FROM tasks ORDER BY round")]
    sources = [r["source"] for r in db.query(
        "SELECT DISTINCT source FROM prompts WHERE source IS NOT NULL ORDER BY source")]
    held_out = db.scalar("SELECT count(*) FROM prompts WHERE held_out")
    return ["all", *(f"round:{r}" for r in rounds), *(f"source:{s}" for s in sources),
            *(["held_out"] if held_out else [])]


def select_prompts(db: Store, choice: str | None, training: bool) -> list[list[dict]]:
    """The prompts of a set (chat messages), oldest first; held-out prompts are left out of any
    set a policy trains on, and the ``held_out`` set is refused for training."""
    choice = choice or "all"
    where, params = [], []
    if choice.startswith("round:"):
        try:
            params = [int(choice.split(":", 1)[1])]
        except ValueError:
            raise StoreError(f"prompts: {choice!r}: round:N with a round number") from None
        where.append("id IN (SELECT prompt_id FROM tasks WHERE round = ?)")
    elif choice.startswith("source:"):
        where.append("source = ?")
        params = [choice.split(":", 1)[1]]
    elif choice == "held_out":
        if training:
            raise StoreError("prompts: a policy never trains on held-out prompts")
        where.append("held_out")
    elif choice != "all":
        raise StoreError(f"prompts: {choice!r} is not a prompt set (all, round:N, source:NAME, "
                         "held_out)")
    if training:
        where.append("NOT coalesce(held_out, false)")
    sql = "SELECT messages FROM prompts" + (" WHERE " + " AND ".join(where) if where else "")
    rows = db.query(sql + " ORDER BY created_at, id", params)
    if not rows:
        if choice == "held_out":
            raise StoreError("prompts: this store has no held-out prompts yet")
        raise StoreError(f"prompts: the set {choice!r} has no prompts")
    return [json.loads(r["messages"]) for r in rows]


def current_label_count(db: Store, source: str | None = None) -> int:
    """Labels in force (not superseded), of one source (human, ai) or all."""
    sql = "SELECT count(*) FROM labels WHERE superseded_by IS NULL"
    return int(db.scalar(sql + (" AND source = ?" if source else ""), [source] if source else []))


def usual_overlap(db: Store) -> int:
    """The overlap (annotators per task) most tasks have; 1 with no tasks."""
    return int(db.scalar("SELECT required_labels FROM tasks GROUP BY required_labels "
                         "ORDER BY count(*) DESC, required_labels DESC LIMIT 1") or 1)


def prompt_of_row(db: Store, row_id: str) -> str | None:
    """The prompt id of a Browse row's id: a prompt's own id, or a task's prompt."""
    rows = db.query("SELECT id FROM prompts WHERE id = ? UNION ALL "
                    "SELECT prompt_id FROM tasks WHERE id = ?", [row_id, row_id])
    return rows[0]["id"] if rows else None
