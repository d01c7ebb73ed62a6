"""Which prompts an import marks held out: all of the file's (``--held-out``), or the rows of a
prompts or rankings file that say ``"held_out": true`` (exports write the field, so a snapshot
of the store keeps its held-out prompts held out)."""
from __future__ import annotations

from typing import Any, Sequence

from .. import store
from ..store import StoreError
from .errors import FieldError
from .fields import ParseContext, read_messages
from .parsing import ParsedRows

ROW_FIELD_FORMATS = ("prompts", "rankings")
_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


def row_held_out(rec: dict, ctx: ParseContext) -> bool:
    """The row's ``held_out`` field: a boolean (CSV: true/false, 1/0, yes/no, or empty)."""
    value = rec.get("held_out")
    if value is None or isinstance(value, bool):
        return bool(value)
    if ctx.text_cells and isinstance(value, str) and value.strip().lower() in _TEXT:
        return _TEXT[value.strip().lower()]
    raise FieldError("held_out", f"must be true or false, not {value!r}")


def _row_prompt_id(rec: dict, ctx: ParseContext, tasks: dict[str, dict]) -> str | None:
    if rec.get("prompt") is not None:
        try:
            return store.prompt_row(read_messages(rec["prompt"], "prompt", ctx))["id"]
        except StoreError as err:
            raise FieldError("prompt", str(err)) from None
    task = tasks.get(rec.get("task_id"))
    return task["prompt_id"] if task else None


def held_out_prompt_ids(fmt: str, records: Sequence[Any], lines: Sequence[int], ctx: ParseContext,
                        tasks: dict[str, dict], parsed: ParsedRows, path, all_rows: bool) -> set[str]:
    """The prompt ids to mark: every prompt the file names when ``all_rows``, else those of the
    rows marked ``held_out``. A bad ``held_out`` value raises ``FormatError`` at its line."""
    ids: set[str] = set()
    if all_rows:
        prompts = parsed.tables.get("prompts")
        if prompts is not None:
            ids.update(prompts.column("id").to_pylist() if hasattr(prompts, "column")
                       else [r["id"] for r in prompts])
        for rec in records:   # rows naming a stored task or prompt by id
            if isinstance(rec, dict):
                if rec.get("task_id") in tasks:
                    ids.add(tasks[rec["task_id"]]["prompt_id"])
                if isinstance(rec.get("prompt_id"), str):
                    ids.add(rec["prompt_id"])
    if fmt not in ROW_FIELD_FORMATS:
        return ids
    for rec, line in zip(records, lines):
        try:
            if isinstance(rec, dict) and row_held_out(rec, ctx):
                pid = _row_prompt_id(rec, ctx, tasks)
                if pid:
                    ids.add(pid)
        except FieldError as err:
            raise err.at(path, line) from None
    return ids
