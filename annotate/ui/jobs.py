"""Background jobs started from the admin's Jobs tab: the server never trains in-process.

Starting a job (docs/architecture.md, "the database and who owns it"):
    1. a run folder <workspace>/runs/<run_id>/ gets a snapshot of the data the job needs
       (the current labels as a ``rankings`` file, which imports back through the same pair
       SQL; the prompts for rs / ppo / rloo) and a run.json + inputs.json written with
       ``RunLog`` (the label ids: lineage), ingested at once so the run is listed;
    2. ``prefstudio train KIND --data <snapshot> --out <run folder> [options]`` starts as its
       own process (its own session: a crash or a server restart leaves the other alive);
    3. a watcher thread ingests every live run folder every few seconds
       (``store.ingest_run_dir``, idempotent): status, metrics, scores, labels.
A job that exits without finishing its run.json is marked failed with the last line it
printed, so "not implemented", a bad option or a crash all show as a failed run.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import formats, runlog, store
from ..store import StoreError

KINDS = ("rm", "sft", "rs", "dpo", "ppo", "rloo")
NEEDS_PROMPTS = ("rs", "ppo", "rloo")
RESERVED = ("--db", "--out", "--data", "--prompts", "--json")  # the studio sets these itself
LIVE = ("queued", "running")


@dataclass
class Job:
    run_id: str
    folder: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.time)


class JobRunner:
    def __init__(self, db: store.Store, workspace: Path, repo: Path, interval: float = 2.0):
        self.db = db
        self.runs = workspace / "runs"
        self.repo = repo
        self.interval = interval
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- starting and stopping ---------------------------------------------------------------
    def start(self, kind: str, options: str = "", source: str = "both") -> str:
        if kind not in KINDS:
            raise StoreError(f"job kind must be one of {', '.join(KINDS)}, not {kind!r}")
        try:
            extra = shlex.split(options or "")
        except ValueError as err:
            raise StoreError(f"options: {err}") from None
        for token in extra:
            if token.split("=", 1)[0] in RESERVED:
                raise StoreError(f"options: {token.split('=', 1)[0]} is set by the studio")
        run_id = runlog.new_run_id(f"train-{kind}")
        folder = self.runs / run_id
        data = folder / "data.jsonl"
        formats.export(self.db, "rankings", data, source=source)
        label_ids = [r["label_id"] for r in store.rankings(self.db, source=source, kind=None)]
        cmd = [sys.executable, str(self.repo / "app.py"), "train", kind, "--out", str(folder)]
        if kind in NEEDS_PROMPTS:  # these stages sample from prompts; --data is refused by them
            formats.export(self.db, "prompts", folder / "prompts.jsonl")
            cmd += ["--prompts", str(folder / "prompts.jsonl")]
        else:
            cmd += ["--data", str(data)]
        cmd += extra
        config = {"command": cmd[1:], "source": source, "options": extra,
                  "max_steps": _max_steps(extra)}
        log = runlog.RunLog(folder, kind, config, label_ids=label_ids, run_id=run_id)
        log.log("started by the studio: " + " ".join(shlex.quote(c) for c in cmd[1:]))
        store.ingest_run_dir(self.db, folder)
        out = open(folder / "output.txt", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, cwd=self.repo, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        out.close()
        with self._lock:
            self.jobs[run_id] = Job(run_id, folder, proc)
        return run_id

    def stop(self, run_id: str) -> None:
        with self._lock:
            job = self.jobs.get(run_id)
        if job is None or job.proc.poll() is not None:
            raise StoreError(f"run {run_id!r} is not running here")
        os.killpg(job.proc.pid, signal.SIGTERM)
        job.proc.wait(timeout=30)
        self._finish(job, "stopped", "stopped from the studio")

    # -- watching ----------------------------------------------------------------------------
    def watch(self) -> None:
        """Start the watcher thread (and take in run folders left by an earlier server)."""
        self.runs.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.runs.iterdir()):
            if (folder / runlog.RUN_FILE).exists():
                self._ingest(folder)
                run = runlog.read_run(folder)
                if run.get("status") in LIVE and not _alive(run.get("pid")):
                    self._record_end(folder, run["id"], "the job ended while the studio was down")
        self._thread = threading.Thread(target=self._loop, name="prefstudio-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """One round: ingest every live job's folder; finish the ones whose process ended."""
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            code = job.proc.poll()
            self._ingest(job.folder)
            if code is not None:
                run = runlog.read_run(job.folder)
                if run.get("status") in LIVE:
                    self._finish(job, "failed", _last_line(job.folder / "output.txt")
                                 or f"exited with status {code}")
                else:
                    with self._lock:
                        self.jobs.pop(job.run_id, None)

    def _ingest(self, folder: Path) -> None:
        try:
            store.ingest_run_dir(self.db, folder)
        except StoreError as err:  # a half-written or broken folder must not stop the watcher
            print(f"prefstudio jobs: {folder.name}: {err}", file=sys.stderr)

    def _finish(self, job: Job, status: str, error: str) -> None:
        self._record_end(job.folder, job.run_id, error, status)
        with self._lock:
            self.jobs.pop(job.run_id, None)

    def _record_end(self, folder: Path, run_id: str, error: str, status: str = "failed") -> None:
        """Record the end of a job that could not record it itself, in its folder and the store."""
        run = runlog.read_run(folder)
        if run.get("status") in LIVE:
            run.update(status=status, error=error,
                       finished_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
            tmp = folder / (runlog.RUN_FILE + ".tmp")
            tmp.write_text(json.dumps(run, indent=2, ensure_ascii=False, default=str))
            tmp.replace(folder / runlog.RUN_FILE)
        self._ingest(folder)
        store.update_run(self.db, run_id, status=status, error=error)

    # -- what the panel shows ----------------------------------------------------------------
    def overview(self) -> list[dict]:
        rows = []
        for run in store.list_runs(self.db):
            steps = store.metrics(self.db, run["id"])
            last = max((m["step"] for m in steps), default=None)
            config = json.loads(run["config"]) if isinstance(run["config"], str) else (run["config"] or {})
            total = config.get("max_steps")
            rows.append({"run": run["id"], "kind": run["kind"], "status": run["status"],
                         "step": last, "of": total,
                         "started": str(run["started_at"] or "")[:19],
                         "finished": str(run["finished_at"] or "")[:19],
                         "error": run.get("error") or ""})
        return rows

    def detail(self, run_id: str) -> dict:
        run = store.get_run(self.db, run_id)
        lineage = store.lineage(self.db, run_id)
        metrics = store.metrics(self.db, run_id)
        last = max((m["step"] for m in metrics), default=0)
        total = run["config"].get("max_steps")
        return {"run": run_id, "kind": run["kind"], "status": run["status"],
                "error": run.get("error"), "progress": (last / total) if total else None,
                "step": last, "max_steps": total, "labels_used": lineage["labels"],
                "parents": lineage["parents"], "data_hash": lineage["data_hash"],
                "artifact_dir": run["artifact_dir"], "metrics": metrics}


def _max_steps(options: list[str]) -> int | None:
    for i, token in enumerate(options):
        if token == "--max-steps" and i + 1 < len(options) and options[i + 1].isdigit():
            return int(options[i + 1])
        if token.startswith("--max-steps=") and token.split("=", 1)[1].isdigit():
            return int(token.split("=", 1)[1])
    return None


def _last_line(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    return lines[-1][:500] if lines else ""


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
