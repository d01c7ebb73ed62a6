"""Read-only views for the admin: browse tables with filters, labels for agreement, user stats."""
from __future__ import annotations

from .db import Store, StoreError
from .pairs import pairs_sql

TABLES = ("prompts", "responses", "tasks", "labels", "pairs")

# The columns each view shows; texts are cut to ``preview`` characters.
_VIEWS = {
    "prompts": """SELECT p.id, p.held_out, p.source, p.tags, p.messages AS text, p.created_at,
                         (SELECT count(*) FROM tasks t WHERE t.prompt_id = p.id) AS tasks
                  FROM prompts p""",
    "responses": """SELECT r.id, r.prompt_id, r.model, r.run_id, r.text, r.created_at
                    FROM responses r""",
    "tasks": """SELECT t.id, t.kind, len(t.response_ids) AS k, t.round, t.required_labels AS needs,
                       (SELECT count(*) FROM labels l WHERE l.task_id = t.id
                          AND l.superseded_by IS NULL AND l.source = 'human') AS human,
                       (SELECT count(*) FROM labels l WHERE l.task_id = t.id
                          AND l.superseded_by IS NULL AND l.source = 'ai') AS ai,
                       p.messages AS text, t.prompt_id, t.created_at
                FROM tasks t JOIN prompts p ON p.id = t.prompt_id""",
    "labels": """SELECT l.id, l.task_id, t.kind, t.round, l.annotator, l.source, l.judge,
                        l.ranking, l.margin_level AS margin, l.rationale AS text, l.duration_ms AS ms,
                        l.created_at, l.superseded_by
                 FROM labels l JOIN tasks t ON t.id = l.task_id""",
}

# filter name → (views it applies to, SQL condition with one ? parameter)
_FILTERS = {
    "text": (("prompts", "responses", "tasks", "labels"), "contains(lower(text::VARCHAR), lower(?))"),
    "source": (("labels",), "source = ?"),
    "annotator": (("labels",), "annotator = ?"),
    "kind": (("tasks", "labels"), "kind = ?"),
    "round": (("tasks", "labels"), "round = ?"),
    "run": (("labels",), "id IN (SELECT label_id FROM run_inputs WHERE run_id = ?)"),  # lineage
}


def browse(db: Store, table: str, *, text: str | None = None, source: str | None = None,
           annotator: str | None = None, kind: str | None = None, round: int | None = None,
           min_agreement: float | None = None, current_only: bool = True, run: str | None = None,
           limit: int = 200, preview: int | None = 300) -> list[dict]:
    """Rows of one table for the admin's browser, newest first, texts cut to ``preview``."""
    if table not in TABLES:
        raise StoreError(f"table must be one of {', '.join(TABLES)}, not {table!r}")
    limit = max(1, min(int(limit), 5000))
    if table == "pairs":
        sql, params = pairs_sql(source=source or "both", min_agreement=min_agreement)
        rows = db.query(f"SELECT * FROM ({sql}) LIMIT {limit}", params)
        keep = {"task_id": "task_id", "chosen": "chosen", "rejected": "rejected",
                "margin_level": "margin", "votes_chosen": "for", "votes_rejected": "against",
                "agreement": "agreement", "source": "source", "round": "round"}
        rows = [{name: r[k] for k, name in keep.items()} for r in rows
                if (round is None or r["round"] == round)
                and (not text or text.lower() in (r["chosen"] + r["rejected"]).lower())]
    else:
        where, params = [], []
        values = {"text": text, "source": source, "annotator": annotator, "kind": kind,
                  "round": round, "run": run}
        for name, value in values.items():
            tables, cond = _FILTERS[name]
            if value not in (None, "") and table in tables:
                where.append(cond)
                params.append(value)
        if table == "labels" and current_only and not run:   # a run's labels, even superseded
            where.append("superseded_by IS NULL")
        cond = " WHERE " + " AND ".join(where) if where else ""
        rows = db.query(f"SELECT * FROM ({_VIEWS[table]}){cond} "
                        f"ORDER BY created_at DESC NULLS LAST, id LIMIT {limit}", params)
    for row in rows:
        for key, value in row.items():
            if preview and isinstance(value, str) and len(value) > preview:
                row[key] = value[:preview] + "…"
    return rows


def human_labels(db: Store, source: str = "human") -> list[dict]:
    """Current labels with what agreement statistics need: the task's responses and kind,
    the ranking, the order shown, the time taken."""
    if source not in ("human", "ai", "both"):
        raise StoreError(f"source must be human, ai or both, not {source!r}")
    cond = "" if source == "both" else "AND l.source = ?"
    return db.query(f"""SELECT l.id, l.task_id, t.kind, t.response_ids, l.annotator, l.source,
                               l.ranking, l.margin_level, l.shown_order, l.duration_ms,
                               l.created_at
                        FROM labels l JOIN tasks t ON t.id = l.task_id
                        WHERE l.superseded_by IS NULL {cond}
                        ORDER BY l.task_id, l.annotator""", [] if source == "both" else [source])


def user_stats(db: Store) -> list[dict]:
    """Users with their role and how many current labels each has made."""
    return db.query("""SELECT u.name, u.role, u.created_at,
                              count(l.id) AS labels, max(l.created_at) AS last_label
                       FROM users u LEFT JOIN labels l ON l.annotator = u.name
                            AND l.superseded_by IS NULL AND l.source = 'human'
                       GROUP BY ALL ORDER BY u.name""")


def task_ids(db: Store, round: int | None = None) -> list[str]:
    if round is None:
        return [r["id"] for r in db.query("SELECT id FROM tasks ORDER BY id")]
    return [r["id"] for r in db.query("SELECT id FROM tasks WHERE round = ? ORDER BY id", [round])]
