"""Export: pairs (TRL columns plus provenance), labels (every row, with provenance), and the
rankings, prompts and responses import formats, as JSONL, CSV or Parquet."""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .. import store
from . import argilla, hf, labelstudio
from .errors import FormatError
from .reading import file_kind

EXPORTS = ("pairs", "labels", "rankings", "prompts", "responses")
# --format other than auto: what each can export (labels and rankings: every current label)
TOOL_EXPORTS = {"labelstudio": ("labels", "rankings"), "argilla": ("labels", "rankings"),
                "hf": ("pairs", "rankings")}

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
           min_agreement: float | None = None, fmt: str = "auto") -> dict:
    """Write ``what`` (pairs, labels, rankings, prompts, responses) to a .jsonl, .csv or .parquet.

    pairs: TRL columns (prompt, chosen, rejected as conversational message lists) plus margin,
    margin_level, soft_prob, source, votes_chosen, votes_rejected, n_labels, agreement, round,
    task_id. rankings, prompts and responses are the import formats of the same names (they
    import again); labels is every label row, superseded ones included, with provenance.
    The file is written whole or not at all (a temporary file renamed into place).
    ``fmt`` other than auto: ``labelstudio`` (a Label Studio JSON file), ``argilla`` (an
    ``rg.Dataset.to_disk`` folder) of the current labels, ``hf`` (a Hugging Face dataset folder)
    of pairs or rankings.
    """
    out = Path(out)
    if what not in EXPORTS:
        raise FormatError(out.name, f"cannot export {what!r} (use {', '.join(EXPORTS)})")
    if min_agreement is not None and what != "pairs":
        raise FormatError(out.name, "--min-agreement applies to pairs only")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise FormatError(out.name, "--min-agreement must be between 0 and 1")
    if fmt != "auto":
        return _export_as(db, what, out, fmt, source, min_agreement)
    kind, gz = file_kind(out)
    if gz:
        raise FormatError(out, "export writes .jsonl, .csv or .parquet (not compressed)")
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


def _export_as(db: store.Store, what: str, out: Path, fmt: str, source: str,
               min_agreement: float | None) -> dict:
    """Label Studio, Argilla or Hugging Face datasets: another tool's layout."""
    allowed = TOOL_EXPORTS.get(fmt)
    if allowed is None:
        raise FormatError(out.name, f"unknown export format {fmt!r} (use auto, {', '.join(TOOL_EXPORTS)})")
    if what not in allowed:
        raise FormatError(out.name, f"--format {fmt} exports {' or '.join(allowed)}, not {what}")
    rows = _pairs_rows(db, source, min_agreement) if what == "pairs" else _rankings_rows(db, source)
    if fmt == "labelstudio":
        if out.suffix.lower() != ".json":
            raise FormatError(out, "a Label Studio export is a .json file")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            result = labelstudio.write_tasks(rows, tmp)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    elif fmt == "argilla":
        result = _replace_folder(out, lambda tmp: argilla.write_dataset(rows, tmp),
                                 lambda old: (old / ".argilla" / "settings.json").is_file())
    else:
        table_rows = [_flat_gen_params(r) for r in rows]
        result = _replace_folder(out, lambda tmp: hf.write_folder(what, table_rows, _SCHEMAS[what], tmp,
                                                                  _prompt_sources(db, rows)),
                                 lambda old: "prefstudio export" in _text(old / "README.md"))
    return {"what": what, "format": fmt, **result, "path": str(out.resolve())}


def _prompt_sources(db: store.Store, rows: list[dict]) -> Counter:
    """Prompts per source name among the exported rows."""
    prompt_of = {t["id"]: t["prompt_id"] for t in store.list_tasks(db)}
    source_of = {p["id"]: p["source"] or "unknown" for p in store.list_prompts(db)}
    return Counter(source_of[p] for p in {prompt_of[r["task_id"]] for r in rows})


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[:4096] if path.is_file() else ""


def _replace_folder(out: Path, write, earlier_export) -> dict:
    """Write a folder whole or not at all: into a temporary sibling, then renamed into place.
    An existing ``out`` is replaced only when it is empty or an earlier export of this kind."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not earlier_export(out))):
        raise FormatError(out, "exists and is neither an empty folder nor an earlier export of this "
                               "kind; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (out.with_name(f".{out.name}.{os.getpid()}.{s}") for s in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        result = write(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return result


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
