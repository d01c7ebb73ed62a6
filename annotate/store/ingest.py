"""Run folders: how the database owner takes in what a job wrote with ``annotate.runlog.RunLog``.

``ingest_run_dir`` is idempotent: every row has a content id or the job's own id, so ingesting
a folder twice, or again after it grew, adds only what is new. The rows go through the same
bulk write as an import (``batch.write_batch_in``); labels replace an annotator's current label
through ``labels.mark_superseded``, the store's one write of ``superseded_by``.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pyarrow as pa

from .batch import RowError, first_unknown, write_batch_in
from .db import Store, StoreError, canonical_json, one
from .items import (check_messages, get_tasks, insert_rows, prompt_id, prompt_row, response_id,
                    response_row, task_row)
from .labels import imported_label_id, label_row, margin_levels
from .priorities import read_priorities, write_priorities
from .runs import STATUSES

FINISHED = ("done", "failed", "stopped")


def read_jsonl_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of every complete line; a line still being written (no newline
    yet) is left for the next ingest. A complete line that is not JSON is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    out = []
    for n, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            out.append((n, json.loads(raw)))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(f"{path}:{n}: not valid JSON ({err})") from None
    return out


def ingest_run_dir(db: Store, folder: str | Path) -> dict[str, Any]:
    """Take a run folder into the database (idempotent; see the module docstring).

    run.json → runs (insert or update; a finished status is never moved back to running),
    metrics.jsonl → metrics, inputs.json → run_inputs, responses.jsonl → prompts / responses /
    tasks (responses sharing a ``group`` become one task once the run has finished, so a
    growing folder never makes a task of a half-written group), labels.jsonl → labels (a new
    label by the same annotator for the same task supersedes the old one), scores.jsonl → scores.
    Returns how many rows of each kind were new.
    """
    folder = Path(folder)
    run_file = folder / "run.json"
    if not run_file.exists():
        raise StoreError(f"{folder}: no run.json (not a run folder)")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{run_file}: not valid JSON ({err})") from None
    run_row = _run_row(run, folder)
    run_id = run_row["id"]
    finished = run_row["status"] in FINISHED

    metrics = [_metric_row(run_id, rec, folder / "metrics.jsonl", n)
               for n, rec in read_jsonl_lines(folder / "metrics.jsonl")]
    inputs = _inputs(folder / "inputs.json")
    prompts, responses, tasks = _responses(run_id, folder / "responses.jsonl", finished)
    new_tasks = {t["id"]: t for t in tasks}
    label_lines = read_jsonl_lines(folder / "labels.jsonl")
    known_tasks = get_tasks(db, [rec.get("task_id") for _, rec in label_lines
                                 if isinstance(rec, dict) and isinstance(rec.get("task_id"), str)])
    levels = margin_levels(db)
    labels = [_label_row(rec, {**known_tasks, **new_tasks}, levels, folder / "labels.jsonl", n)
              for n, rec in label_lines]
    scores_path = folder / "scores.jsonl"
    scores = [(n, _score_row(run_id, rec, scores_path, n)) for n, rec in read_jsonl_lines(scores_path)]
    ranks_path = folder / "priorities.jsonl"
    ranks = read_priorities(run_id, read_jsonl_lines(ranks_path), ranks_path)

    with db.write() as cur:
        counts = {"runs": _upsert_run(cur, run_row)}
        counts["metrics"] = _upsert(cur, "metrics", ["run_id", "step", "name", "value"], metrics,
                                    "SELECT count(*) FROM metrics WHERE run_id = ?", [run_id])
        counts["run_inputs"] = insert_rows(cur, "run_inputs",
                                           [{"run_id": run_id, "label_id": lid} for lid in inputs])
        try:
            counts.update(write_batch_in(cur, prompts, responses, tasks, labels, supersede=True))
        except RowError as err:
            name = {"labels": "labels.jsonl"}.get(err.table, "responses.jsonl")
            raise StoreError(f"{folder / name}: {err}") from None
        bad = first_unknown(cur, "responses", [r["response_id"] for _, r in scores])
        if bad is not None:
            n, r = scores[bad]
            raise StoreError(f"{scores_path}:{n}: response_id: unknown response id {r['response_id']!r}")
        counts["scores"] = _upsert(cur, "scores", ["response_id", "scorer", "value", "run_id", "kept"],
                                   [r for _, r in scores],
                                   "SELECT count(*) FROM scores WHERE run_id = ?", [run_id])
        bad = first_unknown(cur, "tasks", [r["task_id"] for r in ranks])
        if bad is not None:
            raise StoreError(f"{ranks_path}: task_id: unknown task id {ranks[bad]['task_id']!r}")
        counts["priorities"] = write_priorities(cur, ranks)
        if not counts["tasks"] and not counts["labels"] and not counts["priorities"]:
            db.queue_untouched()   # a training job's progress: the queue need not reload
    return {"run": run_id, "status": run_row["status"], **counts}


def _bad(path: Path, n: int | None, field: str, why: str) -> StoreError:
    where = f"{path}:{n}" if n is not None else str(path)
    return StoreError(f"{where}: {field}: {why}")


def _timestamp(value: Any) -> dt.datetime | None:
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(str(value))
    if stamp.tzinfo is not None:  # the database keeps naive UTC
        stamp = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return stamp


def _run_row(run: Any, folder: Path) -> dict:
    path = folder / "run.json"
    if not isinstance(run, dict):
        raise _bad(path, None, "run", "expected a JSON object")
    for field in ("id", "kind"):
        if not isinstance(run.get(field), str) or not run[field]:
            raise _bad(path, None, field, "must be a non-empty string")
    status = run.get("status") or "running"
    if status not in STATUSES:
        raise _bad(path, None, "status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
    try:
        started, finished = _timestamp(run.get("started_at")), _timestamp(run.get("finished_at"))
    except ValueError as err:
        raise _bad(path, None, "started_at/finished_at", str(err)) from None
    parents = run.get("parents") or []
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise _bad(path, None, "parents", "must be a list of run ids")
    log = folder / "log.txt"
    return {"id": run["id"], "kind": run["kind"], "config": canonical_json(run.get("config") or {}),
            "status": status, "pid": run.get("pid"), "error": run.get("error"),
            "log_path": str(log.resolve()) if log.exists() else None,
            "artifact_dir": run.get("artifact_dir") or str(folder.resolve()),
            "parents": parents, "data_hash": run.get("data_hash"),
            "started_at": started, "finished_at": finished}


def _upsert_run(cur, r: dict) -> int:
    existed = one(cur, "SELECT count(*) FROM runs WHERE id = ?", [r["id"]])[0]
    cols = list(r)
    cur.execute(f"""
        INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})
        ON CONFLICT (id) DO UPDATE SET
            kind = excluded.kind, config = excluded.config,
            status = CASE WHEN runs.status IN ('done', 'failed', 'stopped')
                           AND excluded.status IN ('queued', 'running')
                          THEN runs.status ELSE excluded.status END,
            pid = coalesce(excluded.pid, runs.pid), error = coalesce(excluded.error, runs.error),
            log_path = coalesce(excluded.log_path, runs.log_path),
            artifact_dir = coalesce(runs.artifact_dir, excluded.artifact_dir),
            parents = excluded.parents, data_hash = coalesce(excluded.data_hash, runs.data_hash),
            started_at = coalesce(runs.started_at, excluded.started_at),
            finished_at = coalesce(excluded.finished_at, runs.finished_at)""",
                [r[c] for c in cols])
    return 0 if existed else 1


def _upsert(cur, table: str, cols: list[str], rows: list[dict], count_sql: str, params: list) -> int:
    """INSERT OR REPLACE in bulk; returns how many keys were new."""
    if not rows:
        return 0
    before = one(cur, count_sql, params)[0]
    cur.register("_up", pa.Table.from_pylist([{c: r[c] for c in cols} for r in rows]))
    try:
        cur.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                    f"SELECT {', '.join(cols)} FROM _up")
    finally:
        cur.unregister("_up")
    return one(cur, count_sql, params)[0] - before


def _metric_row(run_id: str, rec: Any, path: Path, n: int) -> dict:
    if not isinstance(rec, dict):
        raise _bad(path, n, "(row)", "expected a JSON object")
    try:
        return {"run_id": run_id, "step": int(rec["step"]), "name": str(rec["name"]),
                "value": None if rec.get("value") is None else float(rec["value"])}
    except KeyError as err:
        raise _bad(path, n, err.args[0], "missing") from None
    except (TypeError, ValueError) as err:
        raise _bad(path, n, "step/value", str(err)) from None


def _inputs(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _bad(path, None, "inputs", "must be a list of label ids")
    return list(dict.fromkeys(ids))


def _responses(run_id: str, path: Path, finished: bool) -> tuple[list, list, list]:
    """responses.jsonl → prompt, response and (for finished runs) group task rows."""
    prompts: dict[str, dict] = {}
    responses: dict[str, dict] = {}
    groups: OrderedDict[str, list] = OrderedDict()
    for n, rec in read_jsonl_lines(path):
        if not isinstance(rec, dict):
            raise _bad(path, n, "(row)", "expected a JSON object")
        try:
            if "prompt" in rec:
                p = prompt_row(rec["prompt"], source=rec.get("source") or run_id)
                prompts.setdefault(p["id"], p)
                pid = p["id"]
            elif isinstance(rec.get("prompt_id"), str):
                pid = rec["prompt_id"]
            else:
                raise StoreError("missing (give prompt messages or a prompt_id)")
        except StoreError as err:
            raise _bad(path, n, "prompt", str(err)) from None
        gen_params = rec.get("gen_params")
        if gen_params is not None and not isinstance(gen_params, dict):
            raise _bad(path, n, "gen_params", "must be an object")
        try:
            r = response_row(pid, rec.get("text"), model=rec.get("model"),
                             adapter=rec.get("adapter"), run_id=run_id, gen_params=gen_params)
        except StoreError as err:
            raise _bad(path, n, "text", str(err)) from None
        responses.setdefault(r["id"], r)
        if rec.get("group") is not None:
            groups.setdefault(str(rec["group"]), []).append((n, pid, r["id"], rec.get("round", 0)))
    tasks = []
    if finished:
        for group, members in groups.items():
            ids = list(dict.fromkeys(m[2] for m in members))
            if len(ids) < 2:
                continue
            n, pid, _, rnd = members[0]
            if any(m[1] != pid for m in members):
                raise _bad(path, n, "group", f"group {group!r} mixes responses to different prompts")
            try:
                tasks.append(task_row(pid, ids, round=rnd))
            except StoreError as err:
                raise _bad(path, n, "group", f"group {group!r}: {err}") from None
    return list(prompts.values()), list(responses.values()), tasks


_LABEL_FIELDS = ("source", "judge", "soft_prob", "rationale", "principle", "shown_order",
                 "duration_ms")


def _label_row(rec: Any, tasks: dict[str, dict], levels: dict[str, float], path: Path, n: int) -> dict:
    if not isinstance(rec, dict):
        raise _bad(path, n, "(row)", "expected a JSON object")
    task = tasks.get(rec.get("task_id"))
    if task is None:
        raise _bad(path, n, "task_id", f"unknown task id {rec.get('task_id')!r}")
    details = rec.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except json.JSONDecodeError as err:
            raise _bad(path, n, "details", f"not valid JSON ({err})") from None
    try:
        row = label_row(task, rec.get("annotator"), rec.get("ranking"),
                        margin_level=rec.get("margin_level"), levels=levels, details=details,
                        **{k: rec[k] for k in _LABEL_FIELDS if rec.get(k) is not None})
    except (StoreError, TypeError) as err:
        raise _bad(path, n, "label", str(err)) from None
    row["id"] = rec.get("id") if isinstance(rec.get("id"), str) else imported_label_id(
        task["id"], row["annotator"], row["ranking"], row["margin_level"])
    return row


def _score_row(run_id: str, rec: Any, path: Path, n: int) -> dict:
    if not isinstance(rec, dict):
        raise _bad(path, n, "(row)", "expected a JSON object")
    rid = rec.get("response_id")
    if rid is None and "prompt" in rec:  # a response this job generated, named by its content
        if not isinstance(rec.get("text"), str):
            raise _bad(path, n, "text", "must be the response text when response_id is absent")
        try:
            rid = response_id(prompt_id(check_messages(rec["prompt"])), rec["text"])
        except StoreError as err:
            raise _bad(path, n, "prompt", str(err)) from None
    if not isinstance(rid, str):
        raise _bad(path, n, "response_id", "missing (give response_id, or prompt and text)")
    if not isinstance(rec.get("scorer"), str) or not rec["scorer"]:
        raise _bad(path, n, "scorer", "must be a non-empty string")
    value = rec.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, n, "value", f"must be a number, not {value!r}")
    kept = rec.get("kept")
    if kept is not None and not isinstance(kept, bool):
        raise _bad(path, n, "kept", "must be true, false or absent")
    return {"response_id": rid, "scorer": rec["scorer"], "value": float(value),
            "run_id": rec.get("run_id") or run_id, "kept": kept}
