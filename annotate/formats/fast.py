"""The import fast path: hh, pairs and prompts rows of the usual shape, in one loop straight into
Arrow columns.

The general parser (``parsing``) parses each row through general helpers that build a dict per database
row and re-validate it (~50 µs per pairs line); at 100,000 lines that, not DuckDB, was most of
an import. This loop does the same work for the rows people import most: it calls the same
field readers (``read_completion``, ``read_margin``, ``split_transcripts``...) and the store's id
functions, so the rows and ids are the ones the general parser would make, but it keeps one list per
column instead of a dict per row.

It gives up on the whole file (returns None) at the first row it is not sure about: a field of
the wrong type, any validation error, a second different label by an explicit annotator, CSV
text cells. The general parser then takes the whole file, which reports the exact
``FILE:LINE: FIELD: reason`` or handles the rare row; the error contract has one implementation.
tests/test_formats_fast.py checks that both ways write identical databases and return identical
results on files that use every feature and oddity of these formats.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from .. import store
from ..store import StoreError
from .errors import FieldError
from .fields import (FIELDS, PROVENANCE, ParseContext, opt_text, read_completion, read_int,
                     read_label_source, read_margin, read_number, split_conversations,
                     split_transcripts)
from .parsing import ParsedRows

FAST_FORMATS = ("hh", "pairs", "prompts")
LABEL_COLUMNS = ("id", "task_id", "annotator", "source", "judge", "ranking", "margin_level",
                 "soft_prob", "rationale", "principle")


class _NotPlain(Exception):
    """A row the fast path leaves to the general one."""


def plain_rows(fmt: str, records: Sequence[Any], lines: Sequence[int],
               ctx: ParseContext) -> ParsedRows | None:
    """The rows the general parser would write for this file, or None to leave it to that parser."""
    if ctx.text_cells or fmt not in FAST_FORMATS:
        return None
    try:
        if fmt == "prompts":
            return _prompts(records, lines, ctx)
        return _pairs(fmt, records, lines, ctx)
    except (_NotPlain, FieldError, StoreError):
        return None


def _ignored(rec: dict, known: set[str], ignored: set[str]) -> None:
    if not known.issuperset(rec):
        ignored.update(k for k in rec if k not in known)


def _prompts(records, lines, ctx) -> ParsedRows:
    known = FIELDS["prompts"] | PROVENANCE
    ids: dict[str, int] = {}
    cols: dict[str, list] = {"id": [], "messages": [], "source": [], "tags": []}
    at: list[int] = []
    out = ParsedRows({}, {"prompts": at})
    for rec, line in zip(records, lines):
        if type(rec) is not dict:
            raise _NotPlain
        _ignored(rec, known, out.ignored)
        tags = rec.get("tags")
        if tags is None:
            tags = []
        elif type(tags) is not list or not all(type(t) is str for t in tags):
            raise _NotPlain
        messages = rec.get("prompt")
        if not isinstance(messages, (str, list)):
            raise _NotPlain
        row = store.prompt_row(messages, opt_text(rec, "source") or ctx.source,
                               [t.strip() for t in tags if t.strip()])
        if row["id"] not in ids:
            ids[row["id"]] = len(at)
            for k in cols:
                cols[k].append(row[k])
            at.append(line)
    out.tables["prompts"] = pa.table({**cols, "tags": pa.array(cols["tags"], pa.list_(pa.string()))})
    return out


def _pairs(fmt: str, records, lines, ctx) -> ParsedRows:
    """hh and pairs rows: a prompt, two responses, a pairwise task and a label per line."""
    known = FIELDS[fmt] | PROVENANCE
    out = ParsedRows({}, {t: [] for t in ("prompts", "responses", "tasks", "labels")})
    seen: dict[str, set[str]] = {t: set() for t in out.lines}
    P = {"id": [], "messages": []}
    R = {"id": [], "prompt_id": [], "text": []}
    T = {"id": [], "prompt_id": [], "response_ids": [], "round": []}
    labels: list[tuple] = []                  # one tuple per label, in LABEL_COLUMNS order
    by_key: dict[tuple[str, str], str] = {}   # (task, annotator) → label id, as parsing.Batch

    for rec, line in zip(records, lines):
        if type(rec) is not dict:
            raise _NotPlain
        _ignored(rec, known, out.ignored)
        # -- the row's prompt and two completions (parsing's pairs and hh parsers)
        chosen, rejected = rec.get("chosen"), rec.get("rejected")
        if fmt == "pairs":
            messages = rec.get("prompt")
            if messages is None:
                if not isinstance(chosen, list):
                    raise _NotPlain
                messages, c, r = split_conversations(chosen, rejected)
            elif isinstance(messages, (str, list)):
                c = read_completion(chosen, "chosen", ctx)
                r = read_completion(rejected, "rejected", ctx)
            else:
                raise _NotPlain
        elif isinstance(chosen, list) or isinstance(rejected, list):
            messages, c, r = split_conversations(chosen, rejected)
        elif type(chosen) is str and type(rejected) is str:
            messages, c, r = split_transcripts(chosen, rejected)
        else:
            raise _NotPlain
        # -- as parsing's _pair
        if not c or not r:
            out.skipped.append({"line": line, "reason": f"{'chosen' if not c else 'rejected'} response is empty"})
            continue
        if c == r:
            out.skipped.append({"line": line, "reason": "chosen and rejected are the same text"})
            continue
        if type(messages) is str:   # one user turn: check_messages reduces to "not blank"
            if not messages.strip():
                raise _NotPlain
            text = store.canonical_json([{"role": "user", "content": messages}])
        else:
            text = store.canonical_json(store.check_messages(messages))
        pid = store.canonical_prompt_id(text)
        if pid not in seen["prompts"]:
            seen["prompts"].add(pid)
            P["id"].append(pid)
            P["messages"].append(text)
            out.lines["prompts"].append(line)
        rc, rr = store.response_id(pid, c), store.response_id(pid, r)
        for rid, text in ((rc, c), (rr, r)):
            if rid not in seen["responses"]:
                seen["responses"].add(rid)
                R["id"].append(rid)
                R["prompt_id"].append(pid)
                R["text"].append(text)
                out.lines["responses"].append(line)
        pair = [rc, rr] if rc < rr else [rr, rc]
        tid = store.task_id("pairwise", pid, pair)
        rnd = read_int(rec.get("round"), "round", ctx, ctx.round)
        if tid not in seen["tasks"]:
            seen["tasks"].add(tid)
            T["id"].append(tid)
            T["prompt_id"].append(pid)
            T["response_ids"].append(pair)
            T["round"].append(rnd)
            out.lines["tasks"].append(line)
        # -- parsing.Batch.label with label_row's checks
        explicit = opt_text(rec, "annotator")
        margin = read_margin(rec, ctx)
        soft_prob = rec.get("soft_prob")
        if soft_prob is not None:
            soft_prob = read_number(soft_prob, "soft_prob", ctx)
            if not 0 <= soft_prob <= 1:
                raise _NotPlain
        source = read_label_source(rec)
        judge, rationale, principle = (opt_text(rec, k) for k in ("judge", "rationale", "principle"))
        base = explicit or ctx.source
        if not isinstance(base, str) or not base.strip():
            raise _NotPlain
        ranking = [[rc], [rr]]
        for n in range(1, len(by_key) + 2):
            annotator = base if n == 1 else f"{base}#{n}"
            lid = store.imported_label_id(tid, annotator, ranking, margin)
            earlier = by_key.get((tid, annotator))
            if earlier is None:
                by_key[(tid, annotator)] = lid
                if lid not in seen["labels"]:
                    seen["labels"].add(lid)
                    labels.append((lid, tid, annotator, source, judge, ranking, margin, soft_prob,
                                   rationale, principle))
                    out.lines["labels"].append(line)
                out.contradictions += n > 1
                break
            if earlier == lid:
                out.duplicates += 1
                break
            if explicit:
                raise _NotPlain   # the general parser reports the second, different label by one annotator

    L = dict(zip(LABEL_COLUMNS, map(list, zip(*labels)))) if labels else {k: [] for k in LABEL_COLUMNS}
    n_p, n_r, n_t, n_l = (len(x["id"]) for x in (P, R, T, L))
    text = pa.string()
    out.tables = {
        "prompts": pa.table({**P, "source": pa.array([ctx.source] * n_p, text),
                             "tags": pa.array([[]] * n_p, pa.list_(text))}),
        "responses": pa.table({**R, **{k: pa.nulls(n_r, text) for k in ("model", "adapter", "run_id", "gen_params")}}),
        "tasks": pa.table({**T, "response_ids": _pairs_of(T["response_ids"]),
                           "round": pa.array(T["round"], pa.int64()),
                           "kind": pa.array(["pairwise"] * n_t, text),
                           "required_labels": pa.array([ctx.required_labels] * n_t, pa.int64())}),
        "labels": pa.table({**L, "ranking": _rankings_of_two(L["ranking"]),
                            "soft_prob": pa.array(L["soft_prob"], pa.float64()),
                            **{k: pa.array(L[k], text) for k in ("judge", "margin_level", "rationale", "principle")},
                            "shown_order": pa.nulls(n_l, pa.list_(text)),
                            "duration_ms": pa.nulls(n_l, pa.int64()), "details": pa.nulls(n_l, text)}),
    }
    return out


def _pairs_of(pairs: list[list[str]]) -> pa.Array:
    """[[a, b], ...] as an Arrow list<string> column, built from flat buffers (pa.array on
    100k small Python lists is ~10x slower)."""
    flat = pa.array([x for p in pairs for x in p], pa.string())
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * len(pairs) + 1, 2, dtype=np.int32)), flat)


def _rankings_of_two(rankings: list[list[list[str]]]) -> pa.Array:
    """[[[a], [b]], ...] (a pairwise label's ranking) as list<list<string>>."""
    flat = pa.array([g[0] for r in rankings for g in r], pa.string())
    groups = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, dtype=np.int32)), flat)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, 2, dtype=np.int32)), groups)
