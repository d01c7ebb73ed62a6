"""The job side of a run: everything a job records goes to its run folder, never to the database.

DuckDB lets one process write a file. A job (training, judging, generation) may run under the
server, under ``accelerate launch`` with several processes, or alone from the CLI, so jobs
write only files; whoever owns the database (the server's job watcher, or the CLI command
after/while the job runs) ingests the folder with ``store.ingest_run_dir``. Ingesting is
idempotent, so a folder may be ingested while it grows and again at the end.

    run.json       id, kind, config, parents, data_hash, status, pid, error, timestamps
    process.json   the job's process as its starter saw it: pid, start token, argv (a studio
                   restarted after a crash finds its jobs again by this; see ``started_process``)
    metrics.jsonl  {"step": 10, "name": "loss", "value": 0.61}
    inputs.json    ids of the labels the run trained on (lineage)
    <name>.jsonl   records for the owner to ingest: labels.jsonl, responses.jsonl, scores.jsonl
    log.txt        human-readable progress
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterable

RUN_FILE = "run.json"
PROCESS_FILE = "process.json"
METRICS_FILE = "metrics.jsonl"
INPUTS_FILE = "inputs.json"


def new_run_id(kind: str) -> str:
    return f"{kind}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunLog:
    """Records one run into ``out_dir``. Only the main process (rank 0) writes; others no-op."""

    def __init__(self, out_dir: str | Path, kind: str, config: dict[str, Any], *,
                 parents: Iterable[str] = (), data_hash: str | None = None,
                 label_ids: Iterable[str] = (), run_id: str | None = None, is_main: bool = True,
                 command: list[str] | None = None):
        self.dir = Path(out_dir)
        self.is_main = is_main
        self.kind = kind
        previous = read_run(self.dir) if (self.dir / RUN_FILE).exists() else {}
        self.id = run_id or previous.get("id") or new_run_id(kind)
        self._run = {
            "id": self.id, "kind": kind, "config": config, "parents": list(parents),
            "data_hash": data_hash, "status": "running", "pid": os.getpid(), "error": None,
            "started_at": previous.get("started_at") or _now(), "finished_at": None,
            "artifact_dir": str(self.dir.resolve()),
        }
        command = command or previous.get("command")   # the starter's (the studio's): kept
        if command:
            self._run["command"] = list(command)
        if not is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # The starter's snapshot is the lineage: when the studio exported the labels and wrote
        # their ids, the trainer (reading that file back into a scratch store, where labels get
        # content ids of another kind) must not replace or add to them.
        label_ids = list(dict.fromkeys(label_ids))
        if label_ids and not (self.dir / INPUTS_FILE).exists():
            (self.dir / INPUTS_FILE).write_text(json.dumps(label_ids))
        self._write_run()

    @classmethod
    def reopen(cls, out_dir: str | Path) -> "RunLog":
        """The RunLog of an existing run, as its run.json stands (to record an end the job could
        not record itself, or to run it again)."""
        log = cls.__new__(cls)
        log.dir, log.is_main = Path(out_dir), True
        log._run = read_run(out_dir)
        log.id, log.kind = log._run["id"], log._run["kind"]
        return log

    @property
    def status(self) -> str:
        return self._run.get("status") or "running"

    def restart(self, message: str) -> None:
        """Mark a stopped or failed run as running again (it resumes in the same folder)."""
        self._run.update(status="running", error=None, finished_at=None)
        self._run.pop("summary", None)
        self._write_run()
        self.log(message)

    def wait_in_queue(self, message: str) -> None:
        """Mark the run queued: its starter (the studio) runs it when a job slot is free."""
        self._run.update(status="queued", error=None, finished_at=None)
        self._write_run()
        self.log(message)

    def started_process(self, pid: int, start_token: str | None, argv: list[str]) -> None:
        """Record the job's process (process.json), so that whoever restarts can tell that a
        live pid is still this job and not a later process that got the same number."""
        tmp = self.dir / (PROCESS_FILE + ".tmp")
        tmp.write_text(json.dumps({"pid": pid, "start_token": start_token, "argv": list(argv),
                                   "started_at": _now()}))
        tmp.replace(self.dir / PROCESS_FILE)

    def _write_run(self) -> None:
        tmp = self.dir / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(self._run, indent=2, ensure_ascii=False, default=str))
        tmp.replace(self.dir / RUN_FILE)

    def metric(self, step: int, **values: float) -> None:
        """Append one line per value: ``metric(10, loss=0.6, reward=1.2)``."""
        if not self.is_main:
            return
        with open(self.dir / METRICS_FILE, "a") as f:
            for name, value in values.items():
                if value is None:
                    continue
                f.write(json.dumps({"step": int(step), "name": name, "value": float(value),
                                    "time": time.time()}) + "\n")

    def record(self, name: str, rows: Iterable[dict]) -> None:
        """Append records to ``<name>.jsonl`` for the database owner to ingest."""
        if not self.is_main:
            return
        with open(self.dir / f"{name}.jsonl", "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def log(self, message: str) -> None:
        if not self.is_main:
            return
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{_now()} {message}\n")

    def finish(self, status: str = "done", error: str | None = None, **summary: Any) -> None:
        if not self.is_main:
            return
        self._run.update(status=status, error=error, finished_at=_now())
        if summary:
            self._run["summary"] = summary
        self._write_run()

    def fail(self, exc: BaseException) -> None:
        self.log("".join(traceback.format_exception(exc)))
        self.finish("stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                    error=f"{type(exc).__name__}: {exc}")


def read_run(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / RUN_FILE).read_text())


def read_process(out_dir: str | Path) -> dict | None:
    """process.json of a job started by the studio, or None (a run started from the CLI)."""
    try:
        return json.loads((Path(out_dir) / PROCESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return rows


def read_records(out_dir: str | Path, name: str) -> list[dict]:
    path = Path(out_dir) / f"{name}.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
