"""What AI judges read from the store: tasks still lacking a judge's label, and AI labels.

Judge jobs never write the database (see ``annotate.runlog``); they read a list of tasks,
either straight from here (the CLI) or from a snapshot file the server wrote from here.
"""
from __future__ import annotations

import json

from .db import Store


def tasks_lacking_label(db: Store, annotator: str, limit: int | None = None,
                        task_ids: list[str] | None = None) -> list[dict]:
    """Tasks with no current label by ``annotator``, oldest first, with their texts.

    Each task: ``{id, kind, round, prompt_id, response_ids, messages, responses: [{id, text}]}``
    with ``responses`` in the task's order.
    """
    where, params = "", [annotator]
    if task_ids is not None:
        where = " AND list_contains(?, t.id)"
        params.append(list(task_ids))
    lim = ""
    if limit is not None:
        lim = " LIMIT ?"
        params.append(int(limit))
    rows = db.query(f"""
        SELECT t.id, t.kind, t.round, t.prompt_id, t.response_ids, p.messages,
               (SELECT list({{'id': r.id, 'text': r.text}} ORDER BY list_position(t.response_ids, r.id))
                  FROM responses r WHERE list_contains(t.response_ids, r.id)) AS responses
        FROM tasks t JOIN prompts p ON p.id = t.prompt_id
        WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.task_id = t.id AND l.annotator = ?
                            AND l.superseded_by IS NULL){where}
        ORDER BY t.created_at, t.id{lim}""", params)
    for row in rows:
        row["messages"] = json.loads(row["messages"])
        row["response_ids"] = list(row["response_ids"])
        row["responses"] = [dict(r) for r in row["responses"]]
    return rows


def ai_labels(db: Store, annotator: str | None = None) -> list[dict]:
    """Current AI labels with their task's responses and the parsed ``details``."""
    where, params = "", []
    if annotator is not None:
        where, params = " AND l.annotator = ?", [annotator]
    rows = db.query(f"""
        SELECT l.id, l.task_id, l.annotator, l.judge, l.principle, l.ranking, l.soft_prob,
               l.margin_level, l.details, t.response_ids, t.kind
        FROM labels l JOIN tasks t ON t.id = l.task_id
        WHERE l.superseded_by IS NULL AND l.source = 'ai'{where}
        ORDER BY l.annotator, l.task_id""", params)
    for row in rows:
        row["details"] = json.loads(row["details"]) if row["details"] else {}
        row["ranking"] = [list(g) for g in row["ranking"]]
        row["response_ids"] = list(row["response_ids"])
    return rows
