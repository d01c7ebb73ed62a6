"""Importing a file: read it whole, parse it (the fast path when it can), then write it in one
transaction, so a bad file changes nothing."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .. import store
from ..store import StoreError
from .errors import FieldError, FormatError
from .fast import plain_rows
from .fields import MAX_ROUND, ParseContext, read_messages
from .argilla import read_dataset
from .labelstudio import read_tasks
from .parsing import CONVERTED, FORMATS, detect_format, parse_rows
from .reading import file_stem, read_records

TOOL_FORMATS = ("labelstudio", "argilla")   # other tools' files, converted before parsing


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building ~10 small objects per row makes the cyclic GC rescan the growing heap again
    and again (a third of the import time at 100k rows); none of them form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def import_file(db: store.Store, path: str | Path, fmt: str = "auto", source: str | None = None,
                round: int = 0, required_labels: int = 1, *, fast: bool = True,
                prompt_field: str | None = None, response_fields: list[str] | None = None) -> dict:
    """Import one file in one transaction; return counts of what was new.

    ``source`` names the file's origin (default: the file name without extension); it is the
    prompts' source and the annotator of the labels in the file (unless a row names one).
    ``fast=False`` always takes the general parser, never the fast path (``fast.py``) (the two
    must agree; tests compare them). ``labelstudio`` and ``argilla`` files (an Argilla dataset is a
    folder) are converted first (``prompt_field``: the field holding the prompt;
    ``response_fields``: Label Studio's data fields holding the responses).
    """
    with _gc_paused():
        if fmt in TOOL_FORMATS:
            return _import_tool_file(db, Path(path), fmt, source, round, required_labels,
                                     prompt_field, response_fields)
        return _import_file(db, Path(path), fmt, source, round, required_labels, fast)


def _check_options(name: str, fmt: str, round: int, required_labels: int) -> None:
    if fmt != "auto" and fmt not in FORMATS + TOOL_FORMATS:
        raise FormatError(name, f"unknown format {fmt!r} (use {', '.join(FORMATS + TOOL_FORMATS)} or auto)")
    if not isinstance(round, int) or not 0 <= round <= MAX_ROUND:
        raise FormatError(name, f"round must be a non-negative integer (at most {MAX_ROUND})")
    if not isinstance(required_labels, int) or not 1 <= required_labels <= MAX_ROUND:
        raise FormatError(name, f"required labels must be a positive integer (at most {MAX_ROUND})")


def _import_tool_file(db: store.Store, path: Path, fmt: str, source: str | None, round: int,
                      required_labels: int, prompt_field: str | None,
                      response_fields: list[str] | None) -> dict:
    _check_options(path.name, fmt, round, required_labels)
    if fmt == "labelstudio":
        records, lines, skipped, items = read_tasks(path, prompt_field, response_fields)
    else:
        records, lines, skipped, items = read_dataset(path, prompt_field)
    if not records:
        raise FormatError(path, "no tasks to import", 1, "(file)")
    source = source or file_stem(path)
    ctx = ParseContext(False, source, round, required_labels, store.margin_levels(db), {})
    parsed = parse_rows(path, CONVERTED, records, lines, ctx)
    parsed.skipped = skipped + parsed.skipped
    return _write(db, path, fmt, source, items, parsed)


def _import_file(db: store.Store, path: Path, fmt: str, source: str | None, round: int,
                 required_labels: int, fast: bool) -> dict:
    _check_options(path.name, fmt, round, required_labels)
    if fmt in TOOL_FORMATS:
        raise FormatError(path.name, f"--format {fmt} reads a file of its own, not rows")
    records, lines, text_cells = read_records(path)
    if not records:
        raise FormatError(path, "no rows to import", 1, "(file)")
    source = source or file_stem(path)
    if fmt == "auto":
        try:
            fmt = detect_format(records[0])
        except FieldError as err:
            raise err.at(path, lines[0]) from None
    tasks = {}
    if fmt == "rankings":  # rows that label existing tasks by id
        tasks = store.get_tasks(db, [r["task_id"] for r in records if isinstance(r, dict)
                                     and r.get("prompt") is None and isinstance(r.get("task_id"), str)])
    ctx = ParseContext(text_cells, source, round, required_labels, store.margin_levels(db), tasks)
    parsed = plain_rows(fmt, records, lines, ctx) if fast else None
    if parsed is None:
        parsed = parse_rows(path, fmt, records, lines, ctx)
    return _write(db, path, fmt, source, len(records), parsed)


def _write(db: store.Store, path: Path, fmt: str, source: str, rows: int, parsed) -> dict:
    """Write the parsed rows in one transaction; the counts of what was new."""
    try:
        counts = store.write_batch(db, **parsed.tables)
    except store.RowError as err:
        line = parsed.lines[err.table][err.index]
        hint = ("; import the file with another --source to add its labels as another annotator's"
                if err.table == "labels" and "already has" in str(err) else "")
        raise FormatError(path, f"{err}{hint}", line, err.field) from None
    return {"file": str(path), "format": fmt, "source": source, "rows": rows, **counts,
            "duplicate_rows": parsed.duplicates, "contradicting_rows": parsed.contradictions,
            "skipped": len(parsed.skipped), "skipped_rows": parsed.skipped[:20],
            "ignored_fields": sorted(parsed.ignored)}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def describe_import(result: dict) -> str:
    """One line for people: what an import added and what it passed over."""
    new = ", ".join(f"{result[k]} {k}" for k in ("prompts", "responses", "tasks", "labels"))
    unit = {"labelstudio": "task", "argilla": "record"}.get(result["format"], "row")
    text = (f"imported {Path(result['file']).name} as {result['format']} ({_n(result['rows'], unit)}): "
            f"{new} new")
    if result["duplicate_rows"]:
        text += f"; {_n(result['duplicate_rows'], 'duplicate row')}"
    if result["contradicting_rows"]:
        text += (f"; {_n(result['contradicting_rows'], 'row')} contradicting an earlier row "
                 f"(kept as extra votes by {result['source']}#2...)")
    if result["skipped"]:
        first = result["skipped_rows"][0]
        what = (f"{_n(result['skipped'], 'row')} without a usable preference" if unit == "row" else
                f"{_n(result['skipped'], 'answer')} that {'is' if result['skipped'] == 1 else 'are'} not a label")
        text += f"; skipped {what} (first: line {first['line']}: {first['reason']})"
    if result["ignored_fields"]:
        text += f"; ignored fields: {', '.join(result['ignored_fields'])}"
    return text


def read_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts of a file whose rows have a ``prompt`` (text or messages), in file order, each once."""
    path = Path(path)
    records, lines, text_cells = read_records(path)
    ctx = ParseContext(text_cells, "", 0, 1, {}, {})
    prompts: dict[str, list[dict]] = {}
    for rec, line in zip(records, lines):
        try:
            if not isinstance(rec, dict):
                raise FieldError("(row)", f"expected an object, got {type(rec).__name__}")
            messages = store.check_messages(read_messages(rec.get("prompt"), "prompt", ctx))
        except StoreError as err:
            raise FormatError(path, str(err), line, "prompt") from None
        except FieldError as err:
            raise err.at(path, line) from None
        prompts.setdefault(store.prompt_id(messages), messages)
    if not prompts:
        raise FormatError(path, "no prompts", 1, "(file)")
    return list(prompts.values())


def load_sample_project(db: store.Store, folder: str | Path) -> dict:
    """Load the embedded sample project (prompts.jsonl, responses.jsonl) into ``db``."""
    folder = Path(folder)
    totals = {"prompts": 0, "responses": 0, "tasks": 0}
    for name, fmt in (("prompts.jsonl", "prompts"), ("responses.jsonl", "responses")):
        if (folder / name).exists():
            result = import_file(db, folder / name, fmt=fmt, source="sample")
            for key in totals:
                totals[key] += result[key]
    return totals

