"""Background jobs started from the admin's Jobs tab: the server never trains in-process.

Starting a job (docs/architecture.md, "the database and who owns it"):
    1. the form's params become the job's command line (``forms.build_argv``), checked with
       the CLI's own parser (``cli.parse_command``: abbreviations and ``--opt=value`` as the
       job would see them); an unknown option, or one that would change what the studio sets
       itself (``--db``, ``--out``, ``--data``, ``--prompts``…), is refused before anything
       is written;
    2. a run folder <workspace>/runs/<run_id>/ gets run.json (status ``queued``, the command)
       and job.json (kind, params, argv); the run waits in the queue for a free slot
       (``max_jobs``, 1 by default: one job at a time on a CPU);
    3. when it starts, the data it reads is frozen into the folder (``jobinputs``: the labels,
       a prompt set, the judge's open tasks or
       the tasks a queue-order job ranks; inputs.json lists the label ids: lineage), and
       ``python -m app <argv>`` starts in its own session (a crash or a restart of the server
       leaves it alive); ``RunLog`` records its pid and start token in process.json;
    4. a watcher thread ingests every live run folder every few seconds
       (``store.ingest_run_dir``, idempotent): status, metrics, responses, labels, scores —
       generation and judging jobs fill the store this way, never by opening it.
A job that ends without finishing its run.json is failed with why (the signal, or its exit
status and last line). A restarted server follows a live pid that is still that job (same
start token, its run folder on its command line), queues queued runs again and fails the
rest. Resume queues a failed or stopped job again: the same command in the same folder, where
the trainers continue from their last checkpoint (``<out>/checkpoint``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import runlog, store
from ..runlog import RunLog
from ..store import StoreError
from . import forms, jobinputs
from .processes import is_same_process, process_facts

CLI_MODULE = "app"                                     # `python -m app` is `prefstudio`
JOB_FILE = "job.json"
LIVE = ("queued", "running")
_PROGRESS_BAR = re.compile(r"\d+%\||\|\s*\d+/\d+ \[")   # a tqdm line is no error message


@dataclass(frozen=True)
class Kind:
    reads: str                 # what the studio freezes for it: labels | prompts | tasks
    out: str = "out"           # the option naming the run folder
    trains: bool = False       # a policy trained on prompts never sees held-out ones


# One line per job kind (its CLI command is forms.COMMANDS[kind]).
KINDS = {
    "rm": Kind("labels"), "sft": Kind("labels"), "dpo": Kind("labels"),
    "rs": Kind("prompts", trains=True), "ppo": Kind("prompts", trains=True),
    "rloo": Kind("prompts", trains=True),
    "rrhf": Kind("labels"),
    "generate": Kind("prompts", out="run_dir"),
    "judge": Kind("tasks"),
    "eval_rm": Kind("labels"), "eval_policy": Kind("prompts"),
    "cai": Kind("prompts", trains=True), "rest": Kind("prompts", trains=True),
    "queue_order": Kind("round_tasks"),
}
SNAPSHOT = {"labels": ("data", "data.jsonl"), "prompts": ("prompts", "prompts.jsonl"),
            "tasks": ("tasks", "tasks.jsonl"), "round_tasks": ("tasks", "tasks.jsonl")}


@dataclass
class Job:
    run_id: str
    folder: Path
    pid: int
    start_token: str | None
    proc: subprocess.Popen | None = None   # None: found again after a restart (not our child)
    folder_in_argv: bool = True            # False: a run started from the CLI (any --out spelling)

    def exit_code(self) -> tuple[bool, int | None]:
        """(ended, exit status); the status is unknown (None) for a job we did not start."""
        if self.proc is not None:
            code = self.proc.poll()
            return code is not None, code
        folder = self.folder if self.folder_in_argv else None
        return not is_same_process(self.pid, self.start_token, folder), None


class JobRunner:
    def __init__(self, db: store.Store, workspace: Path, command: list[str] | None = None,
                 interval: float = 2.0, parse_command=None, max_jobs: int = 1):
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.db = db
        self.parse_command = parse_command
        self.workspace = Path(workspace)
        self.runs = self.workspace / "runs"
        self.command = list(command or (sys.executable, "-m", CLI_MODULE))
        self.interval = interval
        self.max_jobs = max_jobs
        self.jobs: dict[str, Job] = {}      # running
        self.queue: list[str] = []          # waiting, first come first served
        self._lock = threading.Lock()
        self._launching = threading.Lock()  # one start, resume or launch at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queueing, starting, resuming and stopping -------------------------------------------
    def argv(self, kind: str, params: dict, folder: Path) -> list[str]:
        """The job's command line (after ``prefstudio``), checked; nothing is written."""
        forms.check_kind(kind)
        dest, name = SNAPSHOT[KINDS[kind].reads]
        paths = {dest: str(folder / name), KINDS[kind].out: str(folder)}
        return forms.build_argv(kind, params, self.parse_command, self.runs, paths)

    def start(self, kind: str, params: dict | None = None) -> str:
        """Queue a job of ``kind`` (params keyed by its CLI options' dests); returns its run id."""
        forms.check_kind(kind)
        if not isinstance(params or {}, dict):
            raise StoreError("params must be an object of option names to values")
        if self.parse_command is not None and hasattr(self.parse_command, "options"):
            params = forms.typed(kind, params or {}, self.parse_command.options)
        run_id = runlog.new_run_id(kind.replace("_", "-"))
        folder = self.runs / run_id
        argv = self.argv(kind, params, folder)
        if KINDS[kind].reads == "prompts":   # refuse an empty or unknown set now, not later
            store.select_prompts(self.db, params.get("prompts"), KINDS[kind].trains)
        folder.mkdir(parents=True)
        _write_json(folder / JOB_FILE, {"kind": kind, "params": params, "argv": argv,
                                        "prepared": False})
        config = {"params": params, "max_steps": params.get("max_steps"),
                  "round": params.get("round")}
        log = RunLog(folder, kind, config, run_id=run_id, command=["prefstudio", *argv])
        log.wait_in_queue("queued by the studio: prefstudio " + shlex.join(argv))
        store.ingest_run_dir(self.db, folder)
        with self._lock:
            self.queue.append(run_id)
        self._drain()
        return run_id

    def resume(self, run_id: str) -> dict:
        """Queue a failed or stopped job again in its folder: the trainer continues from its
        last checkpoint when it saved one (else it starts over)."""
        folder = self._folder(run_id)
        with self._launching:
            log = RunLog.reopen(folder)
            if log.status not in ("failed", "stopped"):
                raise StoreError(f"run {run_id!r} is {log.status}: only a failed or stopped "
                                 "run can be resumed")
            with self._lock:
                if run_id in self.jobs:
                    raise StoreError(f"run {run_id!r}: its process has not ended yet")
            if _job_argv(folder) is None:
                raise StoreError(f"run {run_id!r} was not started by the studio: resume it "
                                 "with its own command")
            checkpoint = (folder / "checkpoint").is_dir()
            log.wait_in_queue("resumed by the studio, " + ("from its last checkpoint" if checkpoint
                                                           else "from the start (no checkpoint)"))
            store.reopen_run(self.db, run_id)
            store.ingest_run_dir(self.db, folder)
            with self._lock:
                self.queue.append(run_id)
        self._drain()
        return {"resumed": run_id, "from_checkpoint": checkpoint}

    def _drain(self) -> None:
        """Start queued jobs while fewer than ``max_jobs`` run."""
        with self._launching:
            while True:
                with self._lock:
                    if not self.queue or len(self.jobs) >= self.max_jobs:
                        return
                    run_id = self.queue.pop(0)
                folder = self.runs / run_id
                try:
                    self._launch(folder)
                except (StoreError, OSError) as err:   # e.g. nothing to train on any more
                    self._record_end(folder, str(err))

    def _launch(self, folder: Path) -> None:
        job = _read_json(folder / JOB_FILE) or {"argv": _job_argv(folder), "prepared": True}
        if not job.get("prepared"):
            job.update(self._prepare(job["kind"], job["params"], folder), prepared=True)
            _write_json(folder / JOB_FILE, job)
        argv = job["argv"]
        log = RunLog.reopen(folder)
        log.restart("started by the studio: prefstudio " + shlex.join(argv))
        with open(folder / "output.txt", "a") as out:
            proc = subprocess.Popen([*self.command, *argv], cwd=self.workspace, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_job_env(), start_new_session=True)
        # Popen returns once the child has exec'd: its start time and command line are final
        token = (process_facts(proc.pid) or (None, ""))[0]
        log.started_process(proc.pid, token, argv)
        store.ingest_run_dir(self.db, folder)
        store.update_run(self.db, log.id, pid=proc.pid)
        with self._lock:
            self.jobs[log.id] = Job(log.id, folder, proc.pid, token, proc)

    def _prepare(self, kind: str, params: dict, folder: Path) -> dict:
        """Freeze what the job reads into its folder, now that it starts (a job queued behind
        a generation job sees the tasks that job made). Returns the total for progress."""
        reads = KINDS[kind].reads
        if reads == "labels":
            _, label_ids = jobinputs.write_labels(self.db, folder, training=kind != "eval_rm")
            _write_json(folder / runlog.INPUTS_FILE, label_ids)
            return {"total": params.get("max_steps")}
        if reads == "prompts":
            _, n = jobinputs.write_prompts(self.db, folder, params.get("prompts"),
                                           KINDS[kind].trains)
            return {"total": params.get("max_steps") or (n if kind == "generate" else None)}
        if reads == "round_tasks":
            _, n = jobinputs.write_round_tasks(self.db, folder, params.get("round"))
            return {"total": n}
        spec = forms.resolve_run_name(str(params.get("judge") or ""), self.runs, judge=True)
        _, n = jobinputs.write_tasks(self.db, folder, spec, params.get("principle"))
        return {"total": n}

    def stop(self, run_id: str) -> None:
        with self._lock:
            queued = run_id in self.queue
            if queued:
                self.queue.remove(run_id)
            job = self.jobs.pop(run_id, None)
        if queued:
            self._record_end(self.runs / run_id, "stopped from the studio before it started",
                             "stopped")
            return
        if job is None or job.exit_code()[0]:
            if job is not None:
                self._record_end(job.folder, _why_ended(job))
            raise StoreError(f"run {run_id!r} is not running here")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:   # a studio job leads its own process group: end its helpers too
                (os.killpg if os.getpgid(job.pid) == job.pid else os.kill)(job.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 30
            while not job.exit_code()[0] and time.monotonic() < deadline:
                time.sleep(0.1)
            if job.exit_code()[0]:
                break
        self._record_end(job.folder, "stopped from the studio", "stopped")
        self._drain()

    def _folder(self, run_id: str) -> Path:
        folder = self.runs / str(run_id or "")
        if (not isinstance(run_id, str) or not re.fullmatch(r"[\w.-]+", run_id)
                or run_id.startswith(".") or not (folder / runlog.RUN_FILE).exists()):
            raise StoreError(f"unknown run id {run_id!r}")
        return folder

    # -- watching ----------------------------------------------------------------------------
    def watch(self) -> None:
        """Take in the run folders left by an earlier server, find its live jobs again and
        queue its queued ones again, then start the watcher thread."""
        self.runs.mkdir(parents=True, exist_ok=True)
        waiting = []
        for folder in sorted(self.runs.iterdir()):
            if not (folder / runlog.RUN_FILE).exists():
                continue
            self._ingest(folder)
            run = runlog.read_run(folder)
            if run.get("status") == "queued" and (folder / JOB_FILE).exists():
                waiting.append((run.get("started_at") or "", run["id"]))
                continue
            if run.get("status") not in LIVE:
                continue
            job = _find_again(folder, run)
            if job is None:
                self._record_end(folder, "process ended without finishing (noticed when the "
                                         "studio restarted)")
                continue
            RunLog.reopen(folder).log(f"found again by a restarted studio: pid {job.pid}")
            with self._lock:
                self.jobs[job.run_id] = job
        with self._lock:
            self.queue += [run_id for _, run_id in sorted(waiting)]
        self._drain()
        self._thread = threading.Thread(target=self._loop, name="prefstudio-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """One round: ingest every live job's folder; finish the ones whose process ended;
        start queued ones in the slots that freed."""
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            ended, _ = job.exit_code()   # before the ingest: an ended job's folder is complete
            self._ingest(job.folder)
            if ended:
                with self._lock:
                    if self.jobs.pop(job.run_id, None) is None:
                        continue   # stopped or finished by another caller meanwhile
                self._record_end(job.folder, _why_ended(job))
        self._drain()

    def _ingest(self, folder: Path) -> None:
        try:
            store.ingest_run_dir(self.db, folder)
        except StoreError as err:  # a half-written or broken folder must not stop the watcher
            print(f"prefstudio jobs: {folder.name}: {err}", file=sys.stderr)

    def _record_end(self, folder: Path, error: str, status: str = "failed") -> None:
        """Record the end of a job that could not record it itself (killed, crashed before its
        RunLog, stopped, refused when it was to start) in its run.json, then take the folder
        into the store."""
        log = RunLog.reopen(folder)
        if log.status in LIVE:
            log.finish(status, error=error)
        self._ingest(folder)


def _job_argv(folder: Path) -> list[str] | None:
    """The command line of a run the studio started (job.json; process.json for older runs)."""
    job = _read_json(folder / JOB_FILE) or runlog.read_process(folder) or {}
    return job.get("argv")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False))
    tmp.replace(path)


def _why_ended(job: Job) -> str:
    _, code = job.exit_code()
    if code is None:
        return ("process ended without finishing (after the studio restarted: its exit status "
                "is unknown)")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
        return f"killed by signal {-code} ({name})"
    last = _last_line(job.folder / "output.txt")
    return f"exited with status {code}" + (f": {last}" if last else " without finishing")


def _last_line(path: Path) -> str:
    """The last line the job printed that is not a progress bar (tqdm redraws with \\r)."""
    if not path.exists():
        return ""
    lines = re.split(r"[\r\n]+", path.read_text(errors="replace"))
    lines = [l.strip() for l in lines if l.strip() and not _PROGRESS_BAR.search(l)]
    return lines[-1][:500] if lines else ""


def _job_env() -> dict:
    """The server's environment, with the folder of the CLI the server itself imports first on
    the path (an editable install elsewhere must not answer ``-m app``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    spec = importlib.util.find_spec(CLI_MODULE)
    if spec is not None and spec.origin:
        home = str(Path(spec.origin).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


def _find_again(folder: Path, run: dict) -> Job | None:
    """The live job of a run folder left by an earlier server, or None when it has ended."""
    process = runlog.read_process(folder)
    if process:   # started by a studio: the same pid, start token and run folder
        pid, token = process.get("pid"), process.get("start_token")
        return Job(run["id"], folder, pid, token) if is_same_process(pid, token, folder) else None
    facts = process_facts(run.get("pid"))   # started from the CLI: its pid, as it is now
    return Job(run["id"], folder, run["pid"], facts[0], folder_in_argv=False) if facts else None
