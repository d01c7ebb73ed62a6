"""Helpers for the format tests: write rows as JSONL, CSV or Parquet; snapshot a database."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotate import store

FILE_TYPES = ("jsonl", "csv", "parquet")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Lists and objects as JSON text in the cell, None as an empty cell."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            w.writerow(["" if r.get(k) is None else
                        json.dumps(r[k], ensure_ascii=False) if isinstance(r[k], (list, dict)) else r[k]
                        for k in names])
    return path


def _one_type_per_column(row: dict) -> dict:
    """Parquet columns hold one type: prompts as messages, responses as objects with the
    free-form gen_params as JSON text (as prefstudio's own export writes them)."""
    row = dict(row)
    if isinstance(row.get("prompt"), str):
        row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    if isinstance(row.get("responses"), list):
        row["responses"] = [{"text": r} if isinstance(r, str) else dict(r) for r in row["responses"]]
        for r in row["responses"]:
            if isinstance(r.get("gen_params"), dict):
                r["gen_params"] = json.dumps(r["gen_params"])
    if isinstance(row.get("gen_params"), dict):
        row["gen_params"] = json.dumps(row["gen_params"])
    return row


def write_parquet(path: Path, rows: list[dict]) -> Path:
    rows = [_one_type_per_column(r) for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r))   # from_pylist reads the first row's keys
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows]), path)
    return path


def write_rows(folder: Path, name: str, rows: list, file_type: str = "jsonl") -> Path:
    path = folder / f"{name}.{file_type}"
    return {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[file_type](path, rows)


def snapshot(db: store.Store, prompt_source: bool = False) -> dict:
    """Everything an import can create, without timestamps or UI-made ids."""
    prompts = sorted((p["id"], json.dumps(p["messages"], sort_keys=True), tuple(p["tags"]),
                      p["source"] if prompt_source else None) for p in store.list_prompts(db))
    responses = sorted((r["id"], r["prompt_id"], r["text"], r["model"], r["adapter"],
                        json.dumps(r["gen_params"], sort_keys=True)) for r in store.list_responses(db))
    tasks = sorted((t["id"], t["prompt_id"], tuple(t["response_ids"]), t["kind"], t["round"])
                   for t in store.list_tasks(db))
    labels = sorted((lab["task_id"], lab["annotator"], lab["source"], lab["judge"],
                     json.dumps([list(g) for g in lab["ranking"]]), lab["margin_level"],
                     lab["soft_prob"], lab["rationale"], lab["principle"])
                    for lab in store.label_history(db) if lab["superseded_by"] is None)
    return {"prompts": prompts, "responses": responses, "tasks": tasks, "labels": labels}


def full_dump(db: store.Store) -> dict:
    """Every row of every table, for 'the database is exactly as before'."""
    tables = [r["table_name"] for r in db.query(
        "SELECT table_name FROM information_schema.tables ORDER BY table_name")]
    return {t: sorted(map(repr, db.cursor().execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


def pair_content(db: store.Store) -> list[tuple]:
    return sorted((p["prompt"], p["chosen"], p["rejected"], p["margin_level"], round(p["margin"], 9),
                   None if p["soft_prob"] is None else round(p["soft_prob"], 9), p["source"],
                   p["votes_chosen"], p["votes_rejected"], p["n_labels"])
                  for p in store.pairs(db))
