"""Resuming ``prefstudio generate --model openai:...``: what is already there is not asked again.

Into the store: the store knows which prompts are short of K responses from the model
(``store.prompts_needing_responses``), once the run folders of earlier runs that were killed
before they could be ingested are taken in (``ingest_orphans``). Into a file (``--out``): the
file itself says which prompts have their K answers; new lines are appended, one prompt at a
time, so a killed run loses at most the prompts in flight.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from annotate import store
from annotate.runlog import RUN_FILE, RunLog, read_run


def ingest_orphans(db, runs: Path) -> None:
    """Ingest the folders of generate runs whose process died before it could finish them
    (killed, power cut): their answers count as had. Their run.json is marked failed."""
    if not runs.is_dir():
        return
    for folder in sorted(runs.iterdir()):
        try:
            run = read_run(folder) if (folder / RUN_FILE).exists() else {}
        except (OSError, json.JSONDecodeError):
            continue
        if run.get("kind") != "generate" or run.get("status") not in ("queued", "running"):
            continue
        if _alive(run.get("pid")):
            continue   # a studio job still writing: ingested as it stands, not ended
        RunLog.reopen(folder).finish("failed", error="process ended without finishing (found by "
                                                    "a later prefstudio generate)")
        try:
            store.ingest_run_dir(db, folder)
        except store.StoreError as err:   # a broken folder must not stop the new run
            print(f"prefstudio generate: {folder.name}: {err}", file=sys.stderr)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def short_in_store(db, prompts: list[list[dict]], k: int, model: str):
    """The prompts of a file still short of K answers from ``model``, and those answers."""
    short = {r["id"]: r for r in store.prompts_needing_responses(db, k, model, None)}
    known = {r["id"] for r in store.list_prompts(db)}
    out, existing = [], []
    for messages in prompts:
        pid = store.prompt_id(messages)
        if pid in known and pid not in short:
            continue
        out.append(messages)
        texts = short[pid]["texts"] if pid in short else []
        existing.append([{"text": t, "model": model, "adapter": None} for t in texts])
    return out, existing


def missing_in_file(path: Path, prompts: list[list[dict]], model: str, k: int):
    """The prompts ``path`` (a responses-format file this command wrote) does not hold K answers
    from ``model`` for, and per prompt the answers it holds. A last line cut off by a kill is
    dropped from the file."""
    had: dict[str, list[dict]] = {}
    if path.exists():
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(path, "r+b") as f:
                f.truncate(end)
        for n, raw in enumerate(data[:end].splitlines(), start=1):
            try:
                line = json.loads(raw)
                pid = store.prompt_id(line["prompt"])
                items = [r for r in line["responses"] if r.get("model") == model]
            except (json.JSONDecodeError, KeyError, TypeError, store.StoreError):
                raise store.StoreError(f"{path}:{n}: not a line of the responses format; give "
                                       "a new --out or remove the file") from None
            seen = had.setdefault(pid, [])
            seen += [r for r in items if r["text"] not in {s["text"] for s in seen}]
    out, existing = [], []
    for messages in prompts:
        have = had.get(store.prompt_id(messages), [])
        if len(have) < k:
            out.append(messages)
            existing.append(have)
    return out, existing


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append whole lines in one write, flushed: a kill leaves at most one line cut off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())
