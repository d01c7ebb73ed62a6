"""The general parser: every row of an import file through the field readers and the store's
row builders (``store.prompt_row`` ... ``store.label_row``), deduplicated by content id, each
row remembering the line it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import store
from ..store import StoreError
from .errors import FieldError
from .fields import (FIELDS, MAX_K, PROVENANCE, ParseContext, json_cell, opt_text, read_completion,
                     read_int, read_items, read_label_source, read_margin, read_messages,
                     read_number, read_ranking, split_conversations, split_transcripts)

FORMATS = ("hh", "pairs", "rankings", "prompts", "responses")
CONVERTED = "converted"   # rows converted from another tool's file: rankings rows, or responses rows


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


def detect_format(record: Any) -> str:
    """The import format a row looks like, by its fields."""
    if not isinstance(record, dict):
        raise FieldError("(row)", f"expected an object, got {type(record).__name__}")
    keys = {k for k, v in record.items() if v is not None}
    if "ranking" in keys:
        return "rankings"
    if keys & {"chosen", "rejected"}:   # a half pair is a bad pairs row, not a prompt
        return "pairs" if "prompt" in keys else "hh"
    if keys & {"response", "responses"}:
        return "responses"
    if "prompt" in keys:
        return "prompts"
    raise FieldError("(row)", f"cannot tell the format from the fields "
                              f"{', '.join(sorted(keys)) or '(none)'}; pass --format")


class Batch:
    """Rows to write, deduplicated by content id, each remembering the line it came from."""

    def __init__(self, ctx: ParseContext):
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
            raise FieldError(field, str(err)) from None
        return self._add("prompts", row, line)["id"]

    def response(self, pid: str, item: dict, line: int, field: str) -> str:
        try:
            row = store.response_row(pid, item["text"], model=item.get("model"),
                                     adapter=item.get("adapter"), gen_params=item.get("gen_params"))
        except StoreError as err:
            raise FieldError(field, str(err)) from None
        return self._add("responses", row, line)["id"]

    def task(self, pid: str, rids: list[str], kind: str | None, round: int, line: int) -> dict:
        try:
            row = store.task_row(pid, rids, kind=kind, round=round,
                                 required_labels=self.ctx.required_labels)
        except StoreError as err:
            raise FieldError("kind" if kind else "responses", str(err)) from None
        return self._add("tasks", row, line)

    def label(self, task: dict, ranking_ids: list[list[str]], rec: dict, line: int) -> None:
        """One imported label. Without an ``annotator`` field the file's source name labels;
        a second, different label for the same task then becomes ``source#2`` (a second vote,
        so contradicting rows cancel out in the pairs), and an identical one is a duplicate."""
        explicit = opt_text(rec, "annotator")
        if explicit is not None and not explicit.strip():
            raise FieldError("annotator", "must be a non-empty name")
        margin = read_margin(rec, self.ctx)
        soft_prob = rec.get("soft_prob")
        if soft_prob is not None:
            soft_prob = read_number(soft_prob, "soft_prob", self.ctx)
            if not 0 <= soft_prob <= 1:
                raise FieldError("soft_prob", f"must be a probability in [0, 1], not {soft_prob}")
            if len(task["response_ids"]) != 2:
                raise FieldError("soft_prob", "is for pairwise tasks only")
        fields = dict(source=read_label_source(rec), margin_level=margin, levels=self.ctx.levels,
                      soft_prob=soft_prob, judge=opt_text(rec, "judge"),
                      rationale=opt_text(rec, "rationale"), principle=opt_text(rec, "principle"))
        base = explicit or self.ctx.source
        for n in range(1, len(self.by_key) + 2):
            annotator = base if n == 1 else f"{base}#{n}"
            try:
                row = store.label_row(task, annotator, ranking_ids, label_id="(content id)", **fields)
            except StoreError as err:
                raise FieldError("ranking", str(err)) from None
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
                raise FieldError("annotator", f"a second, different label by {annotator!r} for the same "
                                              f"task (first on line {self.lines['labels'][earlier['id']]})")

    def skip(self, line: int, reason: str) -> None:
        self.skipped.append({"line": line, "reason": reason})


def _pair(batch: Batch, rec: dict, line: int, messages: str | list, chosen: str, rejected: str,
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
    task = batch.task(pid, sorted([rc, rr]), "pairwise", read_int(rec.get("round"), "round", ctx, ctx.round), line)
    batch.label(task, [[rc], [rr]], rec, line)


def _parse_hh(batch: Batch, rec: dict, line: int) -> None:
    chosen, rejected = rec.get("chosen"), rec.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        messages, c, r = split_conversations(chosen, rejected)
    else:
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                raise FieldError(field, "missing" if value is None else
                                 f"must be a transcript string, not {type(value).__name__}")
        messages, c, r = split_transcripts(chosen, rejected)
    _pair(batch, rec, line, messages, c, r, prompt_field="chosen")


def _parse_pairs(batch: Batch, rec: dict, line: int) -> None:
    if rec.get("prompt") is None:
        if isinstance(rec.get("chosen"), list):  # TRL implicit prompt
            return _pair(batch, rec, line, *split_conversations(rec["chosen"], rec.get("rejected")),
                         prompt_field="chosen")
        raise FieldError("prompt", "missing")
    messages = read_messages(rec["prompt"], "prompt", batch.ctx)
    _pair(batch, rec, line, messages, read_completion(rec.get("chosen"), "chosen", batch.ctx),
          read_completion(rec.get("rejected"), "rejected", batch.ctx))


def _parse_rankings(batch: Batch, rec: dict, line: int) -> None:
    ctx = batch.ctx
    if rec.get("prompt") is None and rec.get("task_id") is not None:  # label an existing task
        tid = rec["task_id"]
        task = (ctx.tasks.get(tid) or batch.rows["tasks"].get(tid)) if isinstance(tid, str) else None
        if task is None:
            raise FieldError("task_id", f"unknown task id {rec['task_id']!r}")
        rids = task["response_ids"]
    else:
        pid = batch.prompt(read_messages(rec.get("prompt"), "prompt", ctx), line)
        responses = json_cell(rec.get("responses"), "responses", ctx)
        if isinstance(responses, list) and not 2 <= len(responses) <= MAX_K:
            raise FieldError("responses", f"a ranking compares 2 to {MAX_K} responses, not {len(responses)}")
        items = read_items(responses, "responses", ctx, {})
        rids = [batch.response(pid, item, line, f"responses[{j}]") for j, item in enumerate(items)]
        kind = opt_text(rec, "kind")
        task = batch.task(pid, rids, kind, read_int(rec.get("round"), "round", ctx, ctx.round), line)
    groups = read_ranking(rec.get("ranking"), len(rids), ctx)
    batch.label(task, [[rids[i] for i in group] for group in groups], rec, line)


def _parse_prompts(batch: Batch, rec: dict, line: int) -> None:
    tags = rec.get("tags")
    if batch.ctx.text_cells and isinstance(tags, str):  # CSV: a JSON list, or "a, b"
        tags = json_cell(tags, "tags", batch.ctx) if tags.lstrip().startswith("[") else tags.split(",")
    tags = [] if tags is None else tags
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FieldError("tags", "must be a list of strings")
    batch.prompt(read_messages(rec.get("prompt"), "prompt", batch.ctx), line, opt_text(rec, "source"),
                 [t.strip() for t in tags if t.strip()])


def _parse_responses(batch: Batch, rec: dict, line: int) -> None:
    ctx = batch.ctx
    if rec.get("prompt") is not None or rec.get("prompt_id") is None:
        pid = batch.prompt(read_messages(rec.get("prompt"), "prompt", ctx), line)
    else:
        pid = rec["prompt_id"]
        if not isinstance(pid, str):
            raise FieldError("prompt_id", f"must be text, not {type(pid).__name__}")
    if rec.get("response") is not None and rec.get("responses") is not None:
        raise FieldError("response", "give response or responses, not both")
    defaults = {"model": rec.get("model"), "adapter": rec.get("adapter"),
                "gen_params": rec.get("gen_params")}
    if rec.get("response") is not None:
        items = read_items([rec["response"]], "response", ctx, defaults)
    else:
        items = read_items(rec.get("responses"), "responses", ctx, defaults)
        if not items:
            raise FieldError("responses", "is empty")
    rids = [batch.response(pid, item, line, f"responses[{j}]") for j, item in enumerate(items)]
    kind = rec.get("task")
    if kind not in (None, "none", "pairwise", "ranking"):
        raise FieldError("task", f"must be ranking, pairwise or none, not {kind!r}")
    if kind is None:  # default: one task of 2-9 responses; more are just candidates
        kind = "pairwise" if len(rids) == 2 else "ranking" if 3 <= len(rids) <= MAX_K else "none"
    if kind != "none":
        if kind == "pairwise" and len(rids) != 2:
            raise FieldError("task", f"a pairwise task needs exactly 2 responses, not {len(rids)}")
        batch.task(pid, rids, kind, read_int(rec.get("round"), "round", ctx, ctx.round), line)


PARSERS: dict[str, Callable[[Batch, dict, int], None]] = {
    "hh": _parse_hh, "pairs": _parse_pairs, "rankings": _parse_rankings,
    "prompts": _parse_prompts, "responses": _parse_responses,
}


def parse_rows(path: Path, fmt: str, records: list, lines: list[int], ctx: ParseContext) -> ParsedRows:
    """The general parser: every row through the field readers and the store's row builders."""
    batch = Batch(ctx)
    parse = PARSERS.get(fmt)
    ignored: set[str] = set()
    known = (FIELDS["rankings"] | FIELDS["responses"] if fmt == CONVERTED else FIELDS[fmt]) | PROVENANCE
    for rec, line in zip(records, lines):
        try:
            if not isinstance(rec, dict):
                raise FieldError("(row)", f"expected an object, got {type(rec).__name__}")
            (parse or PARSERS["rankings" if "ranking" in rec else "responses"])(batch, rec, line)
        except FieldError as err:
            raise err.at(path, line) from None
        ignored.update(k for k in rec if k not in known)
    tables = {t: list(rows.values()) for t, rows in batch.rows.items()}
    return ParsedRows(tables, {t: [batch.lines[t][r["id"]] for r in rows] for t, rows in tables.items()},
                      batch.duplicates, batch.contradictions, batch.skipped, ignored)

