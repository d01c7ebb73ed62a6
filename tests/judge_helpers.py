"""Small helpers the judge tests share: tasks in a real store, human labels, judge configs."""
from __future__ import annotations

import math
import re

from annotate import store


def add_task(db, prompt: str, responses: list[str]) -> dict:
    """A task (pairwise for two responses, K-way otherwise); returns {id, response_ids}."""
    p = store.prompt_row(prompt)
    store.add_prompts(db, [p])
    rows = [store.response_row(p["id"], text) for text in responses]
    store.add_responses(db, rows)
    t = store.task_row(p["id"], [r["id"] for r in rows])
    store.add_tasks(db, [t])
    return {"id": t["id"], "response_ids": t["response_ids"], "text": dict(zip(t["response_ids"], responses))}


def add_human(db, task: dict, annotator: str, ranking: list) -> None:
    store.add_labels(db, [store.label_row(task, annotator, ranking, margin_level="better")])


def quality(text: str) -> float:
    """The quality a test response claims for itself: 'q=2.5 ...' → 2.5."""
    m = re.search(r"q=(-?[\d.]+)", text)
    return float(m.group(1)) if m else 0.0


def bt(a: str, b: str) -> float:
    """Bradley-Terry p(a better than b) from the claimed qualities."""
    return 1.0 / (1.0 + math.exp(-(quality(a) - quality(b))))
