"""What a job reads, frozen into its run folder when it starts: the labels (a ``rankings``
file), a prompt set (``{"prompt": messages}`` lines) or the tasks a judge labels. The job
never opens the database (the server owns it); the snapshot is also what makes a run
repeatable from its printed command.

Prompt sets, by name: ``all``; ``round:N`` (the prompts of round N's tasks); ``source:NAME``
(an imported set: the prompts' ``source``); ``held_out`` (prompts marked held-out, once the
store has that mark). Policy training never samples held-out prompts.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import formats, judges, store
from ..store import StoreError

HELD_OUT_COLUMN = "held_out"


def has_held_out(db: store.Store) -> bool:
    # TODO(held-out prompts, issue 13): another engineer adds the prompts' held-out mark; until
    # then the ``held_out`` prompt set is refused with a message rather than guessed.
    return bool(db.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'prompts' "
                         "AND column_name = ?", [HELD_OUT_COLUMN]))


def prompt_sets(db: store.Store) -> list[str]:
    rounds = [r["round"] for r in db.query("SELECT DISTINCT round FROM tasks ORDER BY round")]
    sources = [r["source"] for r in db.query(
        "SELECT DISTINCT source FROM prompts WHERE source IS NOT NULL ORDER BY source")]
    return ["all", *(f"round:{r}" for r in rounds), *(f"source:{s}" for s in sources),
            *(["held_out"] if has_held_out(db) else [])]


def select_prompts(db: store.Store, choice: str | None, training: bool) -> list[list[dict]]:
    """The prompts of a prompt set (chat messages), oldest first; held-out prompts are left out
    of any set a policy trains on."""
    choice = choice or "all"
    where, params = "", []
    if choice.startswith("round:"):
        try:
            params = [int(choice.split(":", 1)[1])]
        except ValueError:
            raise StoreError(f"prompts: {choice!r}: round:N with a round number") from None
        where = "WHERE id IN (SELECT prompt_id FROM tasks WHERE round = ?)"
    elif choice.startswith("source:"):
        where, params = "WHERE source = ?", [choice.split(":", 1)[1]]
    elif choice == "held_out":
        if not has_held_out(db):
            raise StoreError("prompts: this store has no held-out prompts yet")
        if training:
            raise StoreError("prompts: a policy never trains on held-out prompts")
        where = f"WHERE {HELD_OUT_COLUMN}"
    elif choice != "all":
        raise StoreError(f"prompts: {choice!r} is not a prompt set (all, round:N, source:NAME, "
                         "held_out)")
    if training and has_held_out(db):
        where += (" AND " if where else "WHERE ") + f"NOT coalesce({HELD_OUT_COLUMN}, false)"
    rows = db.query(f"SELECT messages FROM prompts {where} ORDER BY created_at, id", params)
    if not rows:
        raise StoreError(f"prompts: the set {choice!r} has no prompts")
    return [json.loads(r["messages"]) for r in rows]


def write_labels(db: store.Store, folder: Path) -> tuple[Path, list[str]]:
    """Every current label as a rankings file (the job's own --source / --label-rounds /
    --min-agreement / --principle filter it as they filter the store), and their ids."""
    label_ids = [r["label_id"] for r in store.rankings(db, source="both", kind=None)]
    if not label_ids:
        raise StoreError("there are no labels yet: label some tasks (or import labels) first")
    path = folder / "data.jsonl"
    formats.export(db, "rankings", path, source="both")
    return path, label_ids


def write_prompts(db: store.Store, folder: Path, choice: str | None, training: bool) -> tuple[Path, int]:
    prompts = select_prompts(db, choice, training)
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
