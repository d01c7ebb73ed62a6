"""Written principles a judge judges by (Constitutional AI, Bai et al. 2022).

A principles file is Markdown (``## name`` headings, the text below each is the principle) or
JSON (``{"name": "text", ...}`` or ``[{"name": ..., "text": ...}, ...]``). The default is
``data/principles.md``: harmlessness, helpfulness, honesty.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "data" / "principles.md"
RANDOM = "random"  # --principle random: one principle per task, drawn from the task id
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PrinciplesError(ValueError):
    """A principles file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Principle:
    name: str
    text: str


def load_principles(path: str | Path | None = None) -> list[Principle]:
    path = Path(path) if path else DEFAULT_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PrinciplesError(f"{path}: cannot read: {err.strerror or err}") from None
    if path.suffix.lower() == ".json":
        principles = _from_json(path, raw)
    else:
        principles = _from_markdown(path, raw)
    if not principles:
        raise PrinciplesError(f"{path}:1: no principles found (expected '## name' headings)")
    return principles


def _from_markdown(path: Path, raw: str) -> list[Principle]:
    principles: list[tuple[int, str, list[str]]] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if line.startswith("## "):
            principles.append((lineno, line[3:].strip(), []))
        elif principles and not line.startswith("# "):
            principles[-1][2].append(line)
    out = [_check(path, lineno, name, "\n".join(body).strip()) for lineno, name, body in principles]
    _check_unique(path, [(p.name, lineno) for p, (lineno, _, _) in zip(out, principles)])
    return out


def _from_json(path: Path, raw: str) -> list[Principle]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise PrinciplesError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(d, dict) for d in data):
        items = [(d.get("name"), d.get("text")) for d in data]
    else:
        raise PrinciplesError(f"{path}:1: expected an object {{name: text}} or a list of "
                              "{name, text} objects")
    out = [_check(path, 1, name, text) for name, text in items]
    _check_unique(path, [(p.name, 1) for p in out])
    return out


def _check(path: Path, lineno: int, name, text) -> Principle:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PrinciplesError(f"{path}:{lineno}: name: {name!r} is not a principle name "
                              "(letters, digits, '_', '-', '.')")
    if name == RANDOM:
        raise PrinciplesError(f"{path}:{lineno}: name: {RANDOM!r} is reserved")
    if not isinstance(text, str) or not text.strip():
        raise PrinciplesError(f"{path}:{lineno}: {name}: the principle has no text")
    return Principle(name, " ".join(text.split()))


def _check_unique(path: Path, names: list[tuple[str, int]]) -> None:
    seen = set()
    for name, lineno in names:
        if name in seen:
            raise PrinciplesError(f"{path}:{lineno}: name: principle {name!r} appears twice")
        seen.add(name)


def select_principle(principles: list[Principle], choice: str | None) -> Principle | None:
    """The fixed principle for ``choice`` (None → the first), or None for ``random``."""
    if choice == RANDOM:
        return None
    if choice is None:
        return principles[0]
    for p in principles:
        if p.name == choice:
            return p
    raise PrinciplesError(f"principle {choice!r} is not in the principles file "
                          f"(it has {', '.join(p.name for p in principles)})")


def principle_for_task(principles: list[Principle], fixed: Principle | None, task_id: str) -> Principle:
    """The fixed principle, or one drawn from the task id (the same task always gets the same)."""
    if fixed is not None:
        return fixed
    digest = int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16)
    return principles[digest % len(principles)]
