"""Held-out prompts (``prompts.held_out``): marked at import or in Browse; training never sees
them (no pairs, no rankings, no sampled prompts), `eval policy` measures on them by default."""
from __future__ import annotations

import json
from typing import Iterable

from .db import Store, StoreError


def mark_held_out(db: Store, prompt_ids: Iterable[str], held_out: bool = True) -> int:
    """Mark (or unmark) prompts as held out; returns how many changed. Unknown ids are refused
    and nothing changes."""
    ids = sorted({str(i) for i in prompt_ids})
    if not ids:
        return 0
    with db.write() as cur:
        db.queue_untouched()
        known = {r[0] for r in cur.execute("SELECT id FROM prompts WHERE list_contains(?, id)",
                                           [ids]).fetchall()}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise StoreError(f"unknown prompt id {unknown[0]!r}")
        return cur.execute("UPDATE prompts SET held_out = ? WHERE list_contains(?, id) "
                           "AND coalesce(held_out, false) <> ?",
                           [bool(held_out), ids, bool(held_out)]).fetchall()[0][0]


def held_out_ids(db: Store) -> set[str]:
    return {r["id"] for r in db.query("SELECT id FROM prompts WHERE held_out")}


def held_out_task_ids(db: Store) -> set[str]:
    """Tasks on held-out prompts: their labels never become training data."""
    return {r["id"] for r in db.query("SELECT t.id FROM tasks t JOIN prompts p "
                                      "ON p.id = t.prompt_id WHERE p.held_out")}


def prompt_messages(db: Store, held_out: bool) -> list[list[dict]]:
    """The held-out prompts (``held_out=True``: what `eval policy` measures on) or every other
    prompt (``False``: what rs / ppo / rloo may sample), oldest first."""
    rows = db.query("SELECT messages FROM prompts WHERE coalesce(held_out, false) = ? "
                    "ORDER BY created_at, id", [bool(held_out)])
    return [json.loads(r["messages"]) for r in rows]
