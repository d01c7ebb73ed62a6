"""Import and export: hh, pairs, rankings, prompts and responses as JSONL, CSV or Parquet.

One object per line (JSONL) or row (CSV, Parquet):

    hh         {"chosen": transcript, "rejected": transcript}        Anthropic HH-RLHF
    pairs      {"prompt", "chosen", "rejected", "margin"?}            TRL, standard or conversational
    rankings   {"prompt", "responses": [...], "ranking": [[0], [2, 1], [3]]}  tie groups, best first
    prompts    {"prompt", "source"?, "tags"?}
    responses  {"prompt", "response"} or {"prompt", "responses": [...], "task"?}

A prompt is text or a list of chat messages. An import reads and validates the whole file
first, then writes it in one transaction (``store.write_batch``), so bad input changes nothing
and raises ``FormatError`` as ``FILE:LINE: FIELD: reason`` (for CSV and Parquet the line is the
row number plus one for the header). Ids are content-derived, so importing a file twice adds
nothing. docs/data.md has the full rules (duplicates, contradictions, CSV cells).
"""
from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import store
from .store import StoreError

FORMATS = ("hh", "pairs", "rankings", "prompts", "responses")
EXPORTS = ("pairs", "labels", "rankings", "prompts", "responses")
MAX_K = 9
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}
_LABEL_SOURCES = {"human": "human", "ai": "ai", "ai+human": "human"}  # pairs export's `source`

# Fields each format reads; anything else is reported as ignored. The export's provenance
# columns are read back without complaint (they are recomputed, not imported).
_LABEL_FIELDS = {"margin", "margin_level", "soft_prob", "source", "annotator", "judge",
                 "rationale", "principle", "round"}
_PROVENANCE = {"votes_chosen", "votes_rejected", "n_labels", "agreement", "task_id", "label_id",
               "kind", "id", "created_at"}
_FIELDS = {
    "hh": {"chosen", "rejected"} | _LABEL_FIELDS,
    "pairs": {"prompt", "chosen", "rejected"} | _LABEL_FIELDS,
    "rankings": {"prompt", "task_id", "responses", "ranking", "kind"} | _LABEL_FIELDS,
    "prompts": {"prompt", "source", "tags"},
    "responses": {"prompt", "prompt_id", "response", "responses", "model", "adapter",
                  "gen_params", "task", "round"},
}


class FormatError(StoreError):
    """A file that cannot be imported; the message names the file, line and field."""


class _Bad(Exception):
    """A bad field in the row being parsed; turned into a FormatError with file and line."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


# --- reading files -----------------------------------------------------------------------------

def _kind(path: Path) -> tuple[str, bool]:
    """(jsonl | csv | parquet, gzipped?) from the file name."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for suffix, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                         (".csv", "csv"), (".parquet", "parquet")):
        if name.endswith(suffix) and not (gz and kind == "parquet"):
            return kind, gz
    raise FormatError(f"{path}: unknown file type (use .jsonl, .csv or .parquet; "
                      ".jsonl.gz and .csv.gz are read too)")


def _decode(path: Path, gz: bool) -> str:
    try:
        data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except (OSError, EOFError) as err:
        raise FormatError(f"{path}: cannot read ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise FormatError(f"{path}:{line}: (row): not UTF-8 text "
                          f"(byte 0x{data[err.start]:02x} at offset {err.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_records(path: str | Path) -> tuple[list[Any], list[int], bool]:
    """Rows of a JSONL, CSV or Parquet file: (records, line numbers, cells_are_text).

    CSV cells are strings (an empty cell is a missing value); fields that hold lists or
    objects are JSON text in the cell.
    """
    path = Path(path)
    kind, gz = _kind(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if kind == "parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise FormatError(f"{path}: not a readable Parquet file ({err})") from None
        return rows, list(range(2, len(rows) + 2)), False
    text = _decode(path, gz)
    if kind == "csv":
        return _read_csv(path, text)
    records, lines = [], []
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            records.append(orjson.loads(raw))
        except orjson.JSONDecodeError as err:
            raise FormatError(f"{path}:{n}: (row): not valid JSON ({err.msg} at column {err.colno})") from None
        lines.append(n)
    return records, lines, False


def _read_csv(path: Path, text: str) -> tuple[list[dict], list[int], bool]:
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return [], [], True
        if len(set(header)) != len(header) or not all(h.strip() for h in header):
            raise FormatError(f"{path}:1: (header): column names must be unique and non-empty")
        records, lines = [], []
        for i, cells in enumerate(reader):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise FormatError(f"{path}:{i + 2}: (row): {len(cells)} cells, "
                                  f"but the header names {len(header)} columns")
            records.append({h: (c if c != "" else None) for h, c in zip(header, cells)})
            lines.append(i + 2)
    except csv.Error as err:
        raise FormatError(f"{path}:{reader.line_num}: (row): malformed CSV ({err})") from None
    return records, lines, True


def detect_format(record: Any) -> str:
    """The import format a row looks like, by its fields."""
    if not isinstance(record, dict):
        raise _Bad("(row)", f"expected an object, got {type(record).__name__}")
    keys = {k for k, v in record.items() if v is not None}
    if "ranking" in keys:
        return "rankings"
    if keys & {"chosen", "rejected"}:   # a half pair is a bad pairs row, not a prompt
        return "pairs" if "prompt" in keys else "hh"
    if keys & {"response", "responses"}:
        return "responses"
    if "prompt" in keys:
        return "prompts"
    raise _Bad("(row)", f"cannot tell the format from the fields {', '.join(sorted(keys)) or '(none)'}; "
                        "pass --format")


# --- field readers (each raises _Bad naming the field) -----------------------------------------

class _Ctx:
    """What every row parser needs: how cells are encoded, names and defaults for new rows."""

    def __init__(self, text_cells: bool, source: str, round: int, required_labels: int,
                 levels: dict[str, float], tasks: dict[str, dict]):
        self.text_cells, self.source, self.round = text_cells, source, round
        self.required_labels, self.levels, self.tasks = required_labels, levels, tasks
        self.nearest: dict[float, str] = {}


def _json_cell(value: Any, field: str, ctx: _Ctx) -> Any:
    """CSV cells hold lists and objects as JSON text."""
    if ctx.text_cells and isinstance(value, str):
        try:
            return json.loads(value, strict=False)  # a spreadsheet cell may hold raw newlines
        except json.JSONDecodeError as err:
            raise _Bad(field, f"not valid JSON ({err})") from None
    return value


def _looks_like_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m
                                                           for m in value)


def _messages(value: Any, field: str, ctx: _Ctx) -> str | list:
    """A prompt as given: text (one user turn) or a list of {role, content} messages.
    ``store.check_messages`` (through ``prompt_row``) normalises and checks it."""
    if value is None:
        raise _Bad(field, "missing")
    if ctx.text_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value, strict=False)
            if _looks_like_messages(parsed):
                value = parsed
        except json.JSONDecodeError:
            pass  # plain text that happens to start with "["
    if not isinstance(value, (str, list)):
        raise _Bad(field, f"must be text or a list of messages, not {type(value).__name__}")
    return value


def _completion(value: Any, field: str, ctx: _Ctx) -> str:
    """A TRL completion: text, or a list holding one assistant message."""
    if ctx.text_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value, strict=False)
            if _looks_like_messages(parsed):
                value = parsed
        except json.JSONDecodeError:
            pass
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise _Bad(field, "a conversational completion is a list of exactly one assistant message")
        content = value[0].get("content")
        if not isinstance(content, str):
            raise _Bad(field, "the assistant message's content must be text")
        return content.strip()
    raise _Bad(field, "missing" if value is None else
               f"must be text or a list of messages, not {type(value).__name__}")


def _opt_str(rec: dict, field: str) -> str | None:
    value = rec.get(field)
    if value is not None and not isinstance(value, str):
        raise _Bad(field, f"must be text, not {type(value).__name__}")
    return value or None


def _number(value: Any, field: str, ctx: _Ctx) -> float:
    if ctx.text_cells and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _Bad(field, f"must be a number, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(field, f"must be a finite number, not {value!r}")
    return float(value)


def _int(value: Any, field: str, ctx: _Ctx, default: int) -> int:
    if value is None:
        return default
    number = _number(value, field, ctx)
    if number != int(number) or number < 0:
        raise _Bad(field, f"must be a non-negative integer, not {value!r}")
    return int(number)


def _margin(rec: dict, ctx: _Ctx) -> str | None:
    """A margin level: a level name (``better``), or a number mapped to the nearest level."""
    if "margin_level" in rec:
        level = rec["margin_level"]
        if level is not None and level not in ctx.levels:
            raise _Bad("margin_level", f"must be one of {', '.join(ctx.levels)}, not {level!r}")
        return level
    value = rec.get("margin")
    if value is None:
        return None
    if isinstance(value, str) and value in ctx.levels:
        return value
    if isinstance(value, str) and not ctx.text_cells:
        raise _Bad("margin", f"must be a number or one of {', '.join(ctx.levels)}, not {value!r}")
    number = _number(value, "margin", ctx)
    if number < 0:
        raise _Bad("margin", f"must be >= 0 (the chosen response is the better one), not {number}")
    level = ctx.nearest.get(number)
    if level is None:  # nearest level; half-way between two takes the stronger one
        level = ctx.nearest[number] = min(
            ctx.levels, key=lambda lv: (abs(ctx.levels[lv] - number), -ctx.levels[lv]))
    return level


def _label_source(rec: dict) -> str:
    value = rec.get("source") or "human"
    if value not in _LABEL_SOURCES:
        raise _Bad("source", f"must be human or ai, not {value!r}")
    return _LABEL_SOURCES[value]


def _gen_params(value: Any, field: str) -> dict | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise _Bad(field, f"not valid JSON ({err})") from None
    if value is not None and not isinstance(value, dict):
        raise _Bad(field, f"must be an object, not {type(value).__name__}")
    return value


def _items(value: Any, field: str, ctx: _Ctx, defaults: dict) -> list[dict]:
    """Responses: a list of texts or {text, model?, adapter?, gen_params?} objects."""
    value = _json_cell(value, field, ctx)
    if not isinstance(value, list):
        raise _Bad(field, "missing" if value is None else f"must be a list, not {type(value).__name__}")
    items, seen = [], {}
    for j, item in enumerate(value):
        where = f"{field}[{j}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise _Bad(where, f"must be text or an object with 'text', not {type(item).__name__}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Bad(where, "text must be a non-empty string")
        if text in seen:
            raise _Bad(where, f"repeats {field}[{seen[text]}] (a response may appear once)")
        seen[text] = j
        out = {"text": text}
        for key in ("model", "adapter"):   # an item's own value, else the line's
            v = item.get(key) if item.get(key) is not None else defaults.get(key)
            if v is not None and not isinstance(v, str):
                raise _Bad(f"{where}.{key}", f"must be text, not {type(v).__name__}")
            out[key] = v
        gen_params = item.get("gen_params")
        out["gen_params"] = _gen_params(gen_params if gen_params is not None else defaults.get("gen_params"),
                                        f"{where}.gen_params")
        items.append(out)
    return items


def _ranking(value: Any, k: int, ctx: _Ctx) -> list[list[int]]:
    """Tie groups of 0-based indices, best first, naming each of the k responses once."""
    value = _json_cell(value, "ranking", ctx)
    if value is None:
        raise _Bad("ranking", "missing")
    if not isinstance(value, list):
        raise _Bad("ranking", f"must be a list of tie groups, not {type(value).__name__}")
    if not value:
        raise _Bad("ranking", "is empty")
    groups, seen = [], set()
    for g, group in enumerate(value):
        group = [group] if isinstance(group, int) and not isinstance(group, bool) else group
        if not isinstance(group, list) or not group:
            raise _Bad(f"ranking[{g}]", "must be a non-empty list of response indices")
        for i in group:
            if isinstance(i, bool) or not isinstance(i, int):
                raise _Bad(f"ranking[{g}]", f"holds {i!r}, not a response index")
            if not 0 <= i < k:
                raise _Bad(f"ranking[{g}]", f"index {i} is out of range for {k} responses")
            if i in seen:
                raise _Bad(f"ranking[{g}]", f"response {i} appears twice")
            seen.add(i)
        groups.append(list(group))
    if len(seen) != k:
        missing = min(set(range(k)) - seen)
        raise _Bad("ranking", f"leaves out response {missing}")
    return groups


# --- splitting transcripts ---------------------------------------------------------------------

def _transcript_messages(text: str) -> list[dict]:
    """'\\n\\nHuman: …\\n\\nAssistant: …\\n\\nHuman: …' → chat messages."""
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip()
    parts = _TURN.split(text)
    if parts[0].strip():
        raise _Bad("chosen", "a transcript starts with '\\n\\nHuman:'")
    return [{"role": _HH_ROLE[role], "content": content.strip()}
            for role, content in zip(parts[1::2], parts[2::2])]


def split_transcripts(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """HH-RLHF: two transcripts share everything up to the last assistant turn.

    The prompt ends at the last ``\\n\\nAssistant:`` inside their common prefix (so a response
    that itself contains 'Human:' does not move the cut); the rest of each is the response.
    """
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(ASSISTANT, 0, shared)
    if cut < 0:
        raise _Bad("chosen", "chosen and rejected share no '\\n\\nAssistant:' turn")
    start = cut + len(ASSISTANT)
    return _transcript_messages(chosen[:cut]), chosen[start:].strip(), rejected[start:].strip()


def split_conversations(chosen: Any, rejected: Any) -> tuple[list[dict], str, str]:
    """TRL's implicit-prompt conversational pairs: two chats that differ in the last message."""
    for field, chat in (("chosen", chosen), ("rejected", rejected)):
        if not _looks_like_messages(chat):
            raise _Bad(field, "must be a list of messages")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if len(chosen) == len(rejected) == shared:
        return chosen[:-1], "", ""  # identical: the caller skips the row
    for field, chat in (("chosen", chosen), ("rejected", rejected)):
        if len(chat) - shared != 1 or chat[-1].get("role") != "assistant":
            raise _Bad(field, "the two chats must differ only in their last (assistant) message")
    return chosen[:shared], str(chosen[-1].get("content") or "").strip(), str(rejected[-1].get("content") or "").strip()


# --- the rows of one import --------------------------------------------------------------------

class _Batch:
    """Rows to write, deduplicated by content id, each remembering the line it came from."""

    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        self.rows: dict[str, dict[str, dict]] = {t: {} for t in ("prompts", "responses", "tasks", "labels")}
        self.lines: dict[str, dict[str, int]] = {t: {} for t in self.rows}
        self.by_key: dict[tuple[str, str], dict] = {}   # (task, annotator) → label
        self.duplicates = 0
        self.contradictions = 0
        self.skipped: list[dict] = []

    def _add(self, table: str, row: dict, line: int) -> dict:
        kept = self.rows[table].setdefault(row["id"], row)
        self.lines[table].setdefault(row["id"], line)
        return kept

    def prompt(self, messages: str | list, line: int, source: str | None = None,
               tags: Sequence[str] = (), field: str = "prompt") -> str:
        try:
            row = store.prompt_row(messages, source or self.ctx.source, tags)
        except StoreError as err:
            raise _Bad(field, str(err)) from None
        return self._add("prompts", row, line)["id"]

    def response(self, pid: str, item: dict, line: int, field: str) -> str:
        try:
            row = store.response_row(pid, item["text"], model=item.get("model"),
                                     adapter=item.get("adapter"), gen_params=item.get("gen_params"))
        except StoreError as err:
            raise _Bad(field, str(err)) from None
        return self._add("responses", row, line)["id"]

    def task(self, pid: str, rids: list[str], kind: str | None, round: int, line: int) -> dict:
        try:
            row = store.task_row(pid, rids, kind=kind, round=round,
                                 required_labels=self.ctx.required_labels)
        except StoreError as err:
            raise _Bad("kind" if kind else "responses", str(err)) from None
        return self._add("tasks", row, line)

    def label(self, task: dict, ranking_ids: list[list[str]], rec: dict, line: int) -> None:
        """One imported label. Without an ``annotator`` field the file's source name labels;
        a second, different label for the same task then becomes ``source#2`` (a second vote,
        so contradicting rows cancel out in the pairs), and an identical one is a duplicate."""
        explicit = _opt_str(rec, "annotator")
        margin = _margin(rec, self.ctx)
        soft_prob = rec.get("soft_prob")
        if soft_prob is not None:
            soft_prob = _number(soft_prob, "soft_prob", self.ctx)
            if not 0 <= soft_prob <= 1:
                raise _Bad("soft_prob", f"must be a probability in [0, 1], not {soft_prob}")
            if len(task["response_ids"]) != 2:
                raise _Bad("soft_prob", "is for pairwise tasks only")
        fields = dict(source=_label_source(rec), margin_level=margin, levels=self.ctx.levels,
                      soft_prob=soft_prob, judge=_opt_str(rec, "judge"),
                      rationale=_opt_str(rec, "rationale"), principle=_opt_str(rec, "principle"))
        base = explicit or self.ctx.source
        for n in range(1, len(self.by_key) + 2):
            annotator = base if n == 1 else f"{base}#{n}"
            try:
                row = store.label_row(task, annotator, ranking_ids, label_id="(content id)", **fields)
            except StoreError as err:
                raise _Bad("ranking", str(err)) from None
            row["id"] = store.imported_label_id(task["id"], annotator, row["ranking"], row["margin_level"])
            earlier = self.by_key.get((task["id"], annotator))
            if earlier is None:
                self.by_key[(task["id"], annotator)] = row
                self._add("labels", row, line)
                self.contradictions += n > 1
                return
            if earlier["id"] == row["id"]:
                self.duplicates += 1
                return
            if explicit:
                raise _Bad("annotator", f"a second, different label by {annotator!r} for the same "
                                        f"task (first on line {self.lines['labels'][earlier['id']]})")

    def skip(self, line: int, reason: str) -> None:
        self.skipped.append({"line": line, "reason": reason})


def _pair(batch: _Batch, rec: dict, line: int, messages: str | list, chosen: str, rejected: str,
          prompt_field: str = "prompt") -> None:
    if not chosen or not rejected:
        return batch.skip(line, f"{'chosen' if not chosen else 'rejected'} response is empty")
    if chosen == rejected:
        return batch.skip(line, "chosen and rejected are the same text")
    ctx = batch.ctx
    pid = batch.prompt(messages, line, field=prompt_field)
    rc = batch.response(pid, {"text": chosen}, line, "chosen")
    rr = batch.response(pid, {"text": rejected}, line, "rejected")
    # the task lists its responses by id, not chosen-first, so nothing leaks the label to the UI
    task = batch.task(pid, sorted([rc, rr]), "pairwise", _int(rec.get("round"), "round", ctx, ctx.round), line)
    batch.label(task, [[rc], [rr]], rec, line)


def _parse_hh(batch: _Batch, rec: dict, line: int) -> None:
    chosen, rejected = rec.get("chosen"), rec.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        messages, c, r = split_conversations(chosen, rejected)
    else:
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                raise _Bad(field, "missing" if value is None else
                           f"must be a transcript string, not {type(value).__name__}")
        messages, c, r = split_transcripts(chosen, rejected)
    _pair(batch, rec, line, messages, c, r, prompt_field="chosen")


def _parse_pairs(batch: _Batch, rec: dict, line: int) -> None:
    if rec.get("prompt") is None:
        if isinstance(rec.get("chosen"), list):  # TRL implicit prompt
            return _pair(batch, rec, line, *split_conversations(rec["chosen"], rec.get("rejected")),
                         prompt_field="chosen")
        raise _Bad("prompt", "missing")
    messages = _messages(rec["prompt"], "prompt", batch.ctx)
    _pair(batch, rec, line, messages, _completion(rec.get("chosen"), "chosen", batch.ctx),
          _completion(rec.get("rejected"), "rejected", batch.ctx))


def _parse_rankings(batch: _Batch, rec: dict, line: int) -> None:
    ctx = batch.ctx
    if rec.get("prompt") is None and rec.get("task_id") is not None:  # label an existing task
        tid = rec["task_id"]
        task = (ctx.tasks.get(tid) or batch.rows["tasks"].get(tid)) if isinstance(tid, str) else None
        if task is None:
            raise _Bad("task_id", f"unknown task id {rec['task_id']!r}")
        rids = task["response_ids"]
    else:
        pid = batch.prompt(_messages(rec.get("prompt"), "prompt", ctx), line)
        items = _items(rec.get("responses"), "responses", ctx, {})
        if not 2 <= len(items) <= MAX_K:
            raise _Bad("responses", f"a ranking compares 2 to {MAX_K} responses, not {len(items)}")
        rids = [batch.response(pid, item, line, f"responses[{j}]") for j, item in enumerate(items)]
        kind = _opt_str(rec, "kind")
        task = batch.task(pid, rids, kind, _int(rec.get("round"), "round", ctx, ctx.round), line)
    groups = _ranking(rec.get("ranking"), len(rids), ctx)
    batch.label(task, [[rids[i] for i in group] for group in groups], rec, line)


def _parse_prompts(batch: _Batch, rec: dict, line: int) -> None:
    tags = rec.get("tags")
    if batch.ctx.text_cells and isinstance(tags, str):  # CSV: a JSON list, or "a, b"
        tags = _json_cell(tags, "tags", batch.ctx) if tags.lstrip().startswith("[") else tags.split(",")
    tags = [] if tags is None else tags
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _Bad("tags", "must be a list of strings")
    batch.prompt(_messages(rec.get("prompt"), "prompt", batch.ctx), line, _opt_str(rec, "source"),
                 [t.strip() for t in tags if t.strip()])


def _parse_responses(batch: _Batch, rec: dict, line: int) -> None:
    ctx = batch.ctx
    if rec.get("prompt") is not None or rec.get("prompt_id") is None:
        pid = batch.prompt(_messages(rec.get("prompt"), "prompt", ctx), line)
    else:
        pid = rec["prompt_id"]
        if not isinstance(pid, str):
            raise _Bad("prompt_id", f"must be text, not {type(pid).__name__}")
    if rec.get("response") is not None and rec.get("responses") is not None:
        raise _Bad("response", "give response or responses, not both")
    defaults = {"model": rec.get("model"), "adapter": rec.get("adapter"),
                "gen_params": rec.get("gen_params")}
    if rec.get("response") is not None:
        items = _items([rec["response"]], "response", ctx, defaults)
    else:
        items = _items(rec.get("responses"), "responses", ctx, defaults)
        if not items:
            raise _Bad("responses", "is empty")
    rids = [batch.response(pid, item, line, f"responses[{j}]") for j, item in enumerate(items)]
    kind = rec.get("task")
    if kind not in (None, "none", "pairwise", "ranking"):
        raise _Bad("task", f"must be ranking, pairwise or none, not {kind!r}")
    if kind is None:  # default: one task of 2-9 responses; more are just candidates
        kind = "pairwise" if len(rids) == 2 else "ranking" if 3 <= len(rids) <= MAX_K else "none"
    if kind != "none":
        if kind == "pairwise" and len(rids) != 2:
            raise _Bad("task", f"a pairwise task needs exactly 2 responses, not {len(rids)}")
        batch.task(pid, rids, kind, _int(rec.get("round"), "round", ctx, ctx.round), line)


_PARSERS: dict[str, Callable[[_Batch, dict, int], None]] = {
    "hh": _parse_hh, "pairs": _parse_pairs, "rankings": _parse_rankings,
    "prompts": _parse_prompts, "responses": _parse_responses,
}


# --- import ------------------------------------------------------------------------------------

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
                round: int = 0, required_labels: int = 1, *, fast: bool = True) -> dict:
    """Import one file in one transaction; return counts of what was new.

    ``source`` names the file's origin (default: the file name without extension); it is the
    prompts' source and the annotator of the labels in the file (unless a row names one).
    ``fast=False`` always takes the general parser, never ``annotate.fastimport`` (the two
    must agree; tests compare them).
    """
    with _gc_paused():
        return _import_file(db, Path(path), fmt, source, round, required_labels, fast)


def _import_file(db: store.Store, path: Path, fmt: str, source: str | None, round: int,
                 required_labels: int, fast: bool) -> dict:
    name = path.name
    if fmt != "auto" and fmt not in FORMATS:
        raise FormatError(f"{name}: unknown format {fmt!r} (use {', '.join(FORMATS)} or auto)")
    if not isinstance(round, int) or round < 0:
        raise FormatError(f"{name}: round must be a non-negative integer")
    if not isinstance(required_labels, int) or required_labels < 1:
        raise FormatError(f"{name}: required labels must be a positive integer")
    records, lines, text_cells = read_records(path)
    if not records:
        raise FormatError(f"{path}: no rows to import")
    source = source or _stem(path)
    if fmt == "auto":
        try:
            fmt = detect_format(records[0])
        except _Bad as err:
            raise FormatError(f"{path}:{lines[0]}: {err.field}: {err.reason}") from None
    tasks = {}
    if fmt == "rankings":  # rows that label existing tasks by id
        tasks = store.get_tasks(db, [r["task_id"] for r in records if isinstance(r, dict)
                                     and r.get("prompt") is None and isinstance(r.get("task_id"), str)])
    from . import fastimport   # (it builds on this module's field readers)
    ctx = _Ctx(text_cells, source, round, required_labels, store.margin_levels(db), tasks)
    parsed = fastimport.plain_rows(fmt, records, lines, ctx) if fast else None
    if parsed is None:
        parsed = _parse_rows(path, fmt, records, lines, ctx)
    try:
        counts = store.write_batch(db, **parsed.tables)
    except store.RowError as err:
        line = parsed.lines[err.table][err.index]
        hint = ("; import the file with another --source to add its labels as another annotator's"
                if err.table == "labels" and "already has" in str(err) else "")
        raise FormatError(f"{path}:{line}: {err.field}: {err}{hint}") from None
    return {"file": str(path), "format": fmt, "source": source, "rows": len(records), **counts,
            "duplicate_rows": parsed.duplicates, "contradicting_rows": parsed.contradictions,
            "skipped": len(parsed.skipped), "skipped_rows": parsed.skipped[:20],
            "ignored_fields": sorted(parsed.ignored)}


@dataclass
class ParsedRows:
    """What an import file makes: per table the rows (dicts, or an Arrow table from the fast
    path), unique by id in file order, and the line each came from first."""
    tables: dict[str, Any]
    lines: dict[str, list[int]]
    duplicates: int = 0
    contradictions: int = 0
    skipped: list[dict] = field(default_factory=list)
    ignored: set[str] = field(default_factory=set)


def _parse_rows(path: Path, fmt: str, records: list, lines: list[int], ctx: _Ctx) -> ParsedRows:
    """The general parser: every row through the field readers and the store's row builders."""
    batch = _Batch(ctx)
    parse = _PARSERS[fmt]
    ignored: set[str] = set()
    known = _FIELDS[fmt] | _PROVENANCE
    for rec, line in zip(records, lines):
        try:
            if not isinstance(rec, dict):
                raise _Bad("(row)", f"expected an object, got {type(rec).__name__}")
            parse(batch, rec, line)
        except _Bad as err:
            raise FormatError(f"{path}:{line}: {err.field}: {err.reason}") from None
        ignored.update(k for k in rec if k not in known)
    tables = {t: list(rows.values()) for t, rows in batch.rows.items()}
    return ParsedRows(tables, {t: [batch.lines[t][r["id"]] for r in rows] for t, rows in tables.items()},
                      batch.duplicates, batch.contradictions, batch.skipped, ignored)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "import"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def describe_import(result: dict) -> str:
    """One line for people: what an import added and what it passed over."""
    new = ", ".join(f"{result[k]} {k}" for k in ("prompts", "responses", "tasks", "labels"))
    text = (f"imported {Path(result['file']).name} as {result['format']} ({_n(result['rows'], 'row')}): "
            f"{new} new")
    if result["duplicate_rows"]:
        text += f"; {_n(result['duplicate_rows'], 'duplicate row')}"
    if result["contradicting_rows"]:
        text += (f"; {_n(result['contradicting_rows'], 'row')} contradicting an earlier row "
                 f"(kept as extra votes by {result['source']}#2...)")
    if result["skipped"]:
        first = result["skipped_rows"][0]
        text += (f"; skipped {_n(result['skipped'], 'row')} without a usable preference "
                 f"(first: line {first['line']}: {first['reason']})")
    if result["ignored_fields"]:
        text += f"; ignored fields: {', '.join(result['ignored_fields'])}"
    return text


def read_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts of a file whose rows have a ``prompt`` (text or messages), in file order, each once."""
    path = Path(path)
    records, lines, text_cells = read_records(path)
    ctx = _Ctx(text_cells, "", 0, 1, {}, {})
    prompts: dict[str, list[dict]] = {}
    for rec, line in zip(records, lines):
        try:
            if not isinstance(rec, dict):
                raise _Bad("(row)", f"expected an object, got {type(rec).__name__}")
            messages = store.check_messages(_messages(rec.get("prompt"), "prompt", ctx))
        except StoreError as err:
            raise FormatError(f"{path}:{line}: prompt: {err}") from None
        except _Bad as err:
            raise FormatError(f"{path}:{line}: {err.field}: {err.reason}") from None
        prompts.setdefault(store.prompt_id(messages), messages)
    if not prompts:
        raise FormatError(f"{path}: no prompts")
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


# --- export ------------------------------------------------------------------------------------

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_RESPONSES = pa.list_(pa.struct([("text", pa.string()), ("model", pa.string()),
                                 ("adapter", pa.string()), ("gen_params", pa.string())]))
_SCHEMAS = {
    "pairs": pa.schema([("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES),
                        ("margin", pa.float64()), ("margin_level", pa.string()),
                        ("soft_prob", pa.float64()), ("source", pa.string()),
                        ("votes_chosen", pa.int64()), ("votes_rejected", pa.int64()),
                        ("n_labels", pa.int64()), ("agreement", pa.float64()),
                        ("round", pa.int64()), ("task_id", pa.string())]),
    "rankings": pa.schema([("prompt", _MESSAGES), ("responses", _RESPONSES),
                           ("ranking", pa.list_(pa.list_(pa.int64()))), ("kind", pa.string()),
                           ("round", pa.int64()), ("annotator", pa.string()), ("source", pa.string()),
                           ("judge", pa.string()), ("principle", pa.string()),
                           ("margin_level", pa.string()), ("soft_prob", pa.float64()),
                           ("rationale", pa.string()), ("task_id", pa.string()),
                           ("label_id", pa.string())]),
    "labels": pa.schema([("id", pa.string()), ("task_id", pa.string()), ("kind", pa.string()),
                         ("round", pa.int64()), ("prompt", _MESSAGES),
                         ("responses", pa.list_(pa.string())), ("response_ids", pa.list_(pa.string())),
                         ("ranking", pa.list_(pa.list_(pa.int64()))),
                         ("ranking_ids", pa.list_(pa.list_(pa.string()))),
                         ("annotator", pa.string()), ("source", pa.string()), ("judge", pa.string()),
                         ("principle", pa.string()), ("margin_level", pa.string()),
                         ("margin", pa.float64()), ("soft_prob", pa.float64()),
                         ("rationale", pa.string()), ("shown_order", pa.list_(pa.string())),
                         ("duration_ms", pa.int64()), ("details", pa.string()),
                         ("created_at", pa.string()), ("superseded_by", pa.string())]),
    "prompts": pa.schema([("prompt", _MESSAGES), ("source", pa.string()),
                          ("tags", pa.list_(pa.string())), ("id", pa.string())]),
    "responses": pa.schema([("prompt", _MESSAGES), ("responses", _RESPONSES), ("task", pa.string()),
                            ("round", pa.int64())]),
}


def _chat(messages: list[dict]) -> list[dict]:
    """Messages with role before content (the store keeps canonical, key-sorted JSON)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _response_item(r: dict) -> dict:
    return {"text": r["text"], "model": r["model"], "adapter": r["adapter"], "gen_params": r["gen_params"]}


def _pairs_rows(db, source, min_agreement) -> list[dict]:
    return [{"prompt": _chat(json.loads(p["prompt"])), "chosen": _assistant(p["chosen"]),
             "rejected": _assistant(p["rejected"]), "margin": p["margin"],
             "margin_level": p["margin_level"], "soft_prob": p["soft_prob"], "source": p["source"],
             "votes_chosen": p["votes_chosen"], "votes_rejected": p["votes_rejected"],
             "n_labels": p["n_labels"], "agreement": p["agreement"], "round": p["round"],
             "task_id": p["task_id"]}
            for p in store.pairs(db, source=source, min_agreement=min_agreement)]


def _rankings_rows(db, source) -> list[dict]:
    labels = store.rankings(db, source=source, kind=None)
    responses = {r["id"]: r for r in store.list_responses(db)} if labels else {}
    out = []
    for lab in labels:
        ids = list(lab["response_ids"])
        out.append({"prompt": _chat(json.loads(lab["prompt"])),
                    "responses": [_response_item(responses[i]) for i in ids],
                    "ranking": [[ids.index(i) for i in group] for group in lab["ranking"]],
                    "kind": lab["kind"], "round": lab["round"], "annotator": lab["annotator"],
                    "source": lab["source"], "judge": lab["judge"], "principle": lab["principle"],
                    "margin_level": lab["margin_level"], "soft_prob": lab["soft_prob"],
                    "rationale": lab["rationale"], "task_id": lab["task_id"],
                    "label_id": lab["label_id"]})
    return out


def _labels_rows(db, source) -> list[dict]:
    out = []
    for lab in store.label_history(db, source=source):
        ids = list(lab["response_ids"])
        ranking = [list(g) for g in lab["ranking"]]
        out.append({"id": lab["id"], "task_id": lab["task_id"], "kind": lab["kind"],
                    "round": lab["round"], "prompt": _chat(json.loads(lab["prompt"])),
                    "responses": list(lab["texts"]), "response_ids": ids,
                    "ranking": [[ids.index(i) for i in g] for g in ranking], "ranking_ids": ranking,
                    "annotator": lab["annotator"], "source": lab["source"], "judge": lab["judge"],
                    "principle": lab["principle"], "margin_level": lab["margin_level"],
                    "margin": lab["margin"], "soft_prob": lab["soft_prob"],
                    "rationale": lab["rationale"],
                    "shown_order": None if lab["shown_order"] is None else list(lab["shown_order"]),
                    "duration_ms": lab["duration_ms"],
                    "details": None if lab["details"] is None else json.loads(lab["details"]),
                    "created_at": lab["created_at"].isoformat(), "superseded_by": lab["superseded_by"]})
    return out


def _prompts_rows(db) -> list[dict]:
    return [{"prompt": _chat(p["messages"]), "source": p["source"], "tags": p["tags"], "id": p["id"]}
            for p in store.list_prompts(db)]


def _responses_rows(db) -> list[dict]:
    """One row per task (its responses in task order), then the responses in no task, per prompt."""
    prompts = {p["id"]: _chat(p["messages"]) for p in store.list_prompts(db)}
    responses = {r["id"]: r for r in store.list_responses(db)}
    out, in_task = [], set()
    for t in store.list_tasks(db):
        out.append({"prompt": prompts[t["prompt_id"]],
                    "responses": [_response_item(responses[i]) for i in t["response_ids"]],
                    "task": t["kind"], "round": t["round"]})
        in_task.update(t["response_ids"])
    loose: dict[str, list[dict]] = {}
    for rid, r in responses.items():
        if rid not in in_task:
            loose.setdefault(r["prompt_id"], []).append(_response_item(r))
    out += [{"prompt": prompts[pid], "responses": items, "task": "none", "round": None}
            for pid, items in loose.items()]
    return out


def export(db: store.Store, what: str, out: str | Path, *, source: str = "both",
           min_agreement: float | None = None) -> dict:
    """Write ``what`` (pairs, labels, rankings, prompts, responses) to a .jsonl, .csv or .parquet.

    pairs: TRL columns (prompt, chosen, rejected as conversational message lists) plus margin,
    margin_level, soft_prob, source, votes_chosen, votes_rejected, n_labels, agreement, round,
    task_id. rankings, prompts and responses are the import formats of the same names (they
    import again); labels is every label row, superseded ones included, with provenance.
    The file is written whole or not at all (a temporary file renamed into place).
    """
    out = Path(out)
    if what not in EXPORTS:
        raise FormatError(f"{out.name}: cannot export {what!r} (use {', '.join(EXPORTS)})")
    kind, gz = _kind(out)
    if gz:
        raise FormatError(f"{out}: export writes .jsonl, .csv or .parquet (not compressed)")
    if min_agreement is not None and what != "pairs":
        raise FormatError(f"{out.name}: --min-agreement applies to pairs only")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise FormatError(f"{out.name}: --min-agreement must be between 0 and 1")
    if what == "pairs":
        rows = _pairs_rows(db, source, min_agreement)
    elif what == "rankings":
        rows = _rankings_rows(db, source)
    elif what == "labels":
        rows = _labels_rows(db, source)
    elif what == "prompts":
        rows = _prompts_rows(db)
    else:
        rows = _responses_rows(db)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}[kind](
            rows, tmp, _SCHEMAS[what])
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"what": what, "rows": len(rows), "path": str(out.resolve())}


def _write_jsonl(rows: list[dict], path: Path, schema: pa.Schema) -> None:
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")


def _flat_gen_params(row: dict) -> dict:
    """Parquet columns have one type: gen_params (free-form objects) travel as JSON text."""
    row = dict(row)
    if isinstance(row.get("responses"), list) and row["responses"] and isinstance(row["responses"][0], dict):
        row["responses"] = [{**r, "gen_params": None if r["gen_params"] is None
                             else store.canonical_json(r["gen_params"])} for r in row["responses"]]
    if isinstance(row.get("details"), dict):
        row["details"] = store.canonical_json(row["details"])
    return row


def _write_parquet(rows: list[dict], path: Path, schema: pa.Schema) -> None:
    table = pa.Table.from_pylist([_flat_gen_params(r) for r in rows], schema=schema)
    pq.write_table(table, path)


def _csv_cell(field: str, value: Any) -> str:
    """CSV cells: a one-turn prompt and a completion as plain text; other lists/objects as JSON."""
    if value is None:
        return ""
    if field == "prompt" and len(value) == 1 and value[0]["role"] == "user":
        return value[0]["content"]
    if field in ("chosen", "rejected"):
        return value[0]["content"]
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _write_csv(rows: list[dict], path: Path, schema: pa.Schema) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(schema.names)
        for row in rows:
            writer.writerow([_csv_cell(name, row.get(name)) for name in schema.names])
