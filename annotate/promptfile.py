"""Reading a prompts file without a database: what ``generate``, RS, PPO and RLOO are asked to answer.

A prompts file is JSONL, one object per line with a ``prompt`` that is a string (one user
turn) or a chat (a list of ``{role, content}`` ending with the user's turn), and optional
``tags`` (a list of strings). Lines of the ``responses`` and ``rankings`` formats qualify too:
only ``prompt`` and ``tags`` are read. A bad line raises ``StoreError`` naming the file, the
line and the field, so the CLI prints one line and exits with status 2.
"""
from __future__ import annotations

import json
from pathlib import Path

from .store import StoreError, check_messages, prompt_id


def read_prompt_file(path: str | Path) -> list[dict]:
    """``[{"messages": [...], "tags": [...]}, ...]`` in file order, each distinct chat once."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise StoreError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    prompts: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise StoreError(f"{path}:{n}: (line): not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise StoreError(f"{path}:{n}: (line): expected a JSON object")
        if "prompt" not in row:
            raise StoreError(f"{path}:{n}: prompt: missing")
        try:
            messages = check_messages(row["prompt"])
        except StoreError as err:
            raise StoreError(f"{path}:{n}: prompt: {err}") from None
        tags = row.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise StoreError(f"{path}:{n}: tags: must be a list of strings")
        prompts.setdefault(prompt_id(messages), {"messages": messages, "tags": tags})
    if not prompts:
        raise StoreError(f"{path}: no prompts")
    return list(prompts.values())
