"""Small annotation projects for the queue, agreement, UI and benchmark tests."""
from __future__ import annotations

from annotate import store


def seed_tasks(db: store.Store, pairwise: int = 2, ranking: int = 0, k: int = 4,
               required: int = 1, round: int = 0, texts: dict[int, str] | None = None,
               prefix: str = "") -> list[str]:
    """Create ``pairwise`` 2-response tasks and ``ranking`` K-way tasks; return their ids.

    Prompts are two-turn chats (so the chat view has context to show); ``texts`` overrides
    the text of response i of every task (for XSS payloads).
    """
    prompts, responses, tasks = [], [], []
    for t in range(pairwise + ranking):
        kind_k = 2 if t < pairwise else k
        messages = [{"role": "user", "content": f"{prefix}Question {t}: how do I sort a list?"},
                    {"role": "assistant", "content": "In which language?"},
                    {"role": "user", "content": f"{prefix}Python, please (task {t})."}]
        prompt = store.prompt_row(messages, source="test")
        prompts.append(prompt)
        ids = []
        for i in range(kind_k):
            text = (texts or {}).get(i) or f"Answer {i} to task {t}:\n\n```python\nsorted(xs)  # {i}\n```"
            row = store.response_row(prompt["id"], text, model=f"m{i}")
            responses.append(row)
            ids.append(row["id"])
        tasks.append(store.task_row(prompt["id"], ids, round=round, required_labels=required))
    store.add_prompts(db, prompts)
    store.add_responses(db, responses)
    store.add_tasks(db, tasks)
    return [t["id"] for t in tasks]


def label_counts(db: store.Store) -> dict:
    """Every row of labels, current ones, and the current labels per (task, annotator)."""
    return db.query("""SELECT count(*) AS rows,
                              count(*) FILTER (WHERE superseded_by IS NULL) AS current,
                              (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM labels
                                 WHERE superseded_by IS NULL GROUP BY task_id, annotator)) AS max_per_annotator
                       FROM labels""")[0]


def snapshot(db: store.Store) -> dict:
    """Everything an admin action could change, to prove a refused call changed nothing."""
    tables = ["prompts", "responses", "tasks", "labels", "users", "claims", "skips", "runs",
              "settings"]
    out = {}
    for table in tables:
        out[table] = db.query(f"SELECT * FROM {table} ORDER BY ALL")
    queue = db.memo.get("queue")
    if queue is not None:
        # the queue holds claims in memory and mirrors them to the table up to 1 s late: a claim
        # made before the first snapshot could land between the two; the index is the truth
        out["claims"] = sorted((c["task_id"], c["annotator"], str(c["claimed_at"]))
                               for c in queue.claims())
    return out
