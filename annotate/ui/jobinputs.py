"""What a job reads, frozen into its run folder when it starts: the labels (a ``rankings``
file), a prompt set (``{"prompt": messages}`` lines), the tasks a judge labels or the
tasks a queue-order job ranks. The job
never opens the database (the server owns it); the snapshot is also what makes a run
repeatable from its printed command.

Prompt sets, by name: ``all``; ``round:N`` (the prompts of round N's tasks); ``source:NAME``
(an imported set: the prompts' ``source``); ``held_out`` (prompts marked held-out). Policy
training never samples held-out prompts (``store.select_prompts``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import formats, judges, store
from ..store import StoreError


def write_labels(db: store.Store, folder: Path, training: bool = True) -> tuple[Path, list[str]]:
    """Every current label as a rankings file (the job's own --source / --label-rounds /
    --min-agreement / --principle filter it as they filter the store), and the ids of those it
    may use (lineage): a training job never uses the labels of held-out prompts (the file marks
    them ``held_out``), an evaluation uses them too."""
    rows = store.rankings(db, source="both", kind=None)
    if not rows:
        raise StoreError("there are no labels yet: label some tasks (or import labels) first")
    held_out = store.held_out_task_ids(db) if training else set()
    label_ids = [r["label_id"] for r in rows if r["task_id"] not in held_out]
    path = folder / "data.jsonl"
    formats.export(db, "rankings", path, source="both")
    return path, label_ids


def write_prompts(db: store.Store, folder: Path, choice: str | None, training: bool) -> tuple[Path, int]:
    prompts = store.select_prompts(db, choice, training)
    path = folder / "prompts.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for messages in prompts:
            f.write(json.dumps({"prompt": messages}, ensure_ascii=False) + "\n")
    return path, len(prompts)


def write_tasks(db: store.Store, folder: Path, spec: str, principle: str | None) -> tuple[Path, int]:
    """The tasks that lack this judge's label (the open tasks, as ``prefstudio judge`` picks them)."""
    try:
        name = judges.judge_name(judges.parse_judge_spec(spec).public, principle or None)
    except judges.JudgeConfigError as err:
        raise StoreError(f"judge: {err}") from None
    tasks = store.tasks_lacking_label(db, name)
    if not tasks:
        raise StoreError(f"no open tasks for the judge {name!r}: every task has its label")
    return judges.write_task_snapshot(tasks, folder / "tasks.jsonl"), len(tasks)


def write_round_tasks(db: store.Store, folder: Path, round_: int | None) -> tuple[Path, int]:
    """The tasks a queue-order job ranks (one round's or all), with texts and AI labels."""
    tasks = store.priorities.tasks_to_rank(db, round_)
    if not tasks:
        raise StoreError("there are no tasks to rank" + ("" if round_ is None else f" in round {round_}"))
    path = folder / "tasks.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps(t, ensure_ascii=False, default=str) + "\n")
    return path, len(tasks)
