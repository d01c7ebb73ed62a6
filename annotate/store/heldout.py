"""Held-out prompts: marked at import or in Browse; training never sees them (no pairs, no
rankings, no sampled prompts), `eval policy` measures on them by default."""
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
        before = cur.execute("SELECT count(*) FROM held_out_prompts").fetchall()[0][0]
        if held_out:
            cur.execute("INSERT OR IGNORE INTO held_out_prompts (prompt_id) SELECT unnest(?)", [ids])
        else:
            cur.execute("DELETE FROM held_out_prompts WHERE list_contains(?, prompt_id)", [ids])
        after = cur.execute("SELECT count(*) FROM held_out_prompts").fetchall()[0][0]
    return abs(after - before)


def held_out_ids(db: Store) -> set[str]:
    return {r["prompt_id"] for r in db.query("SELECT prompt_id FROM held_out_prompts")}


def held_out_task_ids(db: Store) -> set[str]:
    """Tasks on held-out prompts: their labels never become training data."""
    return {r["id"] for r in db.query("SELECT t.id FROM tasks t JOIN held_out_prompts h "
                                      "ON h.prompt_id = t.prompt_id")}


def prompt_messages(db: Store, held_out: bool) -> list[list[dict]]:
    """The held-out prompts (``held_out=True``: what `eval policy` measures on) or every other
    prompt (``False``: what rs / ppo / rloo may sample), oldest first."""
    op = "" if held_out else "NOT"
    rows = db.query(f"""SELECT messages FROM prompts p
                        WHERE {op} EXISTS (SELECT 1 FROM held_out_prompts h WHERE h.prompt_id = p.id)
                        ORDER BY created_at, id""")
    return [json.loads(r["messages"]) for r in rows]
