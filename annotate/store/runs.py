"""Runs (generation, judging, training), their metrics and lineage."""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from .db import one, Store, StoreError, canonical_json
from .items import insert_rows

STATUSES = ("queued", "running", "done", "failed", "stopped")


def create_run(db: Store, run_id: str, kind: str, config: dict, *, status: str = "running",
               artifact_dir: str | None = None, log_path: str | None = None,
               parents: Sequence[str] = (), data_hash: str | None = None,
               pid: int | None = None, label_ids: Iterable[str] = ()) -> None:
    if status not in STATUSES:
        raise StoreError(f"unknown run status {status!r}")
    with db.write() as cur:
        db.queue_untouched()
        if one(cur, "SELECT 1 FROM runs WHERE id = ?", [run_id]):
            raise StoreError(f"run {run_id!r} already exists")
        cur.execute("""INSERT INTO runs (id, kind, config, status, pid, log_path, artifact_dir,
                                         parents, data_hash, started_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)""",
                    [run_id, kind, canonical_json(config), status, pid, log_path, artifact_dir,
                     list(parents), data_hash])
        rows = [{"run_id": run_id, "label_id": lid} for lid in dict.fromkeys(label_ids)]
        insert_rows(cur, "run_inputs", rows)


def update_run(db: Store, run_id: str, *, status: str | None = None, pid: int | None = None,
               error: str | None = None, data_hash: str | None = None) -> None:
    if status is not None and status not in STATUSES:
        raise StoreError(f"unknown run status {status!r}")
    with db.write() as cur:
        db.queue_untouched()
        if not one(cur, "SELECT 1 FROM runs WHERE id = ?", [run_id]):
            raise StoreError(f"unknown run id {run_id!r}")
        if status is not None:
            finished = status in ("done", "failed", "stopped")
            cur.execute("UPDATE runs SET status = ?, finished_at = CASE WHEN ? THEN current_timestamp "
                        "ELSE finished_at END WHERE id = ?", [status, finished, run_id])
        if pid is not None:
            cur.execute("UPDATE runs SET pid = ? WHERE id = ?", [pid, run_id])
        if error is not None:
            cur.execute("UPDATE runs SET error = ? WHERE id = ?", [error, run_id])
        if data_hash is not None:
            cur.execute("UPDATE runs SET data_hash = ? WHERE id = ?", [data_hash, run_id])


def reopen_run(db: Store, run_id: str) -> None:
    """A failed or stopped run that is resumed: running again, its error and end cleared (the
    ingest of its folder never moves a finished status back, so this is said explicitly)."""
    with db.write() as cur:
        db.queue_untouched()
        if not one(cur, "SELECT 1 FROM runs WHERE id = ?", [run_id]):
            raise StoreError(f"unknown run id {run_id!r}")
        cur.execute("UPDATE runs SET status = 'running', error = NULL, finished_at = NULL "
                    "WHERE id = ?", [run_id])


def add_metrics(db: Store, run_id: str, rows: list[dict]) -> None:
    """rows: {step, name, value}; a (step, name) written twice keeps the latest value."""
    if not rows:
        return
    with db.write() as cur:
        db.queue_untouched()
        cur.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                        [[run_id, int(r["step"]), str(r["name"]), float(r["value"])] for r in rows])


def get_run(db: Store, run_id: str) -> dict:
    rows = db.query("SELECT * FROM runs WHERE id = ?", [run_id])
    if not rows:
        raise StoreError(f"unknown run id {run_id!r}")
    run = rows[0]
    run["config"] = json.loads(run["config"]) if run["config"] else {}
    return run


def list_runs(db: Store, kind: str | None = None) -> list[dict]:
    if kind:
        return db.query("SELECT * FROM runs WHERE kind = ? ORDER BY started_at DESC", [kind])
    return db.query("SELECT * FROM runs ORDER BY started_at DESC")


def metrics(db: Store, run_id: str) -> list[dict]:
    return db.query("SELECT step, name, value FROM metrics WHERE run_id = ? ORDER BY step, name", [run_id])


def lineage(db: Store, run_id: str) -> dict:
    """Which labels trained the run, and its ancestor runs (reward models, earlier policies)."""
    run = get_run(db, run_id)
    labels = db.scalar("SELECT count(*) FROM run_inputs WHERE run_id = ?", [run_id])
    return {"run": run_id, "kind": run["kind"], "parents": list(run["parents"] or []),
            "labels": labels, "data_hash": run["data_hash"]}


def add_scores(db: Store, rows: list[dict]) -> int:
    """rows: {response_id, scorer, value, run_id, kept}."""
    with db.write() as cur:
        db.queue_untouched()
        cur.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
                        [[r["response_id"], r["scorer"], float(r["value"]), r.get("run_id"),
                          r.get("kept")] for r in rows])
    return len(rows)
