"""Background jobs started from the admin's Jobs tab: the server never trains in-process.

Starting a job (docs/architecture.md, "the database and who owns it"):
    1. the options are parsed by the CLI's own parser (``app.parse_command``: abbreviations
       and ``--opt=value`` as the job would see them); an unknown option, or one that would
       change what the studio sets itself (``--db``, ``--out``, ``--data``, ``--prompts``,
       ``--json``), is refused before anything is written;
    2. a run folder <workspace>/runs/<run_id>/ gets a snapshot of the data the job needs
       (the current labels as a ``rankings`` file; the prompts for rs / ppo / rloo) and a
       run.json + inputs.json written with ``RunLog`` (the label ids: lineage);
    3. ``python -m app train KIND --data <snapshot> --out <run folder> [options]`` starts in
       its own session (a ``generate`` job: ``python -m app generate --prompts <the prompts
       short of K answers> --out <run folder>/candidates.jsonl --run-dir <run folder>``) (a crash or a restart of the server leaves it alive); ``RunLog``
       records its pid and start token in process.json;
    4. a watcher thread ingests every live run folder every few seconds
       (``store.ingest_run_dir``, idempotent): status, metrics, scores, labels.
A job that ends without finishing its run.json is marked failed with why (the signal that
killed it, or its exit status and last line). A server that starts finds the live runs of
the workspace again: a pid that is alive and is still that job (same start token, its run
folder on its command line) is followed to its end; any other is marked failed. A failed or
stopped job can be resumed: the same command in the same folder, where the trainers continue
from their last checkpoint (``<out>/checkpoint``).
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

from .. import formats, runlog, store
from ..runlog import RunLog
from ..store import StoreError

KINDS = ("rm", "sft", "rs", "dpo", "ppo", "rloo", "generate")
NEEDS_PROMPTS = ("rs", "ppo", "rloo")
CLI_MODULE = "app"                                     # `python -m app` is `prefstudio`
STUDIO_PATHS = ("db", "out", "data", "prompts")        # the studio sets these itself,
GENERATE_PATHS = ("db", "out", "prompts", "run_dir")   # (for `prefstudio generate`: these)
LIVE = ("queued", "running")
_UNSET = "\0set-by-the-studio"                          # no option value can contain NUL
_PROGRESS_BAR = re.compile(r"\d+%\||\|\s*\d+/\d+ \[")   # a tqdm line is no error message


def check_options(kind: str, options: str, parse_command) -> tuple[list[str], object]:
    """The extra options as the job's own parser reads them; StoreError (one line) if they are
    not valid for ``train KIND`` (or ``generate``) or would set any option the studio sets.

    ``parse_command(argv)`` is the CLI's own parser (``cli.parse_command``), handed down by
    whoever started the studio — the UI layer does not import the CLI above it — so there is
    no second idea of the options here."""
    try:
        extra = shlex.split(options or "")
    except ValueError as err:
        raise StoreError(f"options: {err}") from None
    if parse_command is None:
        raise StoreError("jobs need the CLI's parser: start the studio with `prefstudio serve`")
    paths = GENERATE_PATHS if kind == "generate" else STUDIO_PATHS
    studio_set = [arg for dest in paths for arg in (_flag(dest), _UNSET)]
    command = ["generate"] if kind == "generate" else ["train", kind]
    try:
        parsed = parse_command([*command, *studio_set, *extra])
    except ValueError as err:
        raise StoreError(f"options: {err}") from None
    for dest in (*paths, "json"):
        if getattr(parsed, dest, None) != (False if dest == "json" else _UNSET):
            flag = _flag(dest)
            spelled = ([t.split("=", 1)[0] for t in extra if t.startswith("--")
                        and flag.startswith(t.split("=", 1)[0])] or [flag])[-1]
            named = "" if spelled == flag else f" (as {spelled})"
            raise StoreError(f"options: {flag}{named} is set by the studio itself")
    return extra, parsed


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
                 interval: float = 2.0, parse_command=None):
        self.db = db
        self.parse_command = parse_command
        self.workspace = Path(workspace)
        self.runs = self.workspace / "runs"
        self.command = list(command or (sys.executable, "-m", CLI_MODULE))
        self.interval = interval
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._launching = threading.Lock()   # one start or resume at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- starting, resuming and stopping -----------------------------------------------------
    def start(self, kind: str, options: str = "", source: str = "both") -> str:
        if kind not in KINDS:
            raise StoreError(f"job kind must be one of {', '.join(KINDS)}, not {kind!r}")
        extra, parsed = check_options(kind, options, self.parse_command)
        if kind == "generate":
            return self._start_generate(extra, parsed)
        run_id = runlog.new_run_id(f"train-{kind}")
        folder = self.runs / run_id
        data = folder / "data.jsonl"
        formats.export(self.db, "rankings", data, source=source)
        label_ids = [r["label_id"] for r in store.rankings(self.db, source=source, kind=None)]
        argv = ["train", kind, "--out", str(folder)]
        if kind in NEEDS_PROMPTS:  # these stages sample from prompts; --data is refused by them
            formats.export(self.db, "prompts", folder / "prompts.jsonl")
            argv += ["--prompts", str(folder / "prompts.jsonl")]
        else:
            argv += ["--data", str(data)]
        argv += extra
        config = {"source": source, "options": extra, "max_steps": parsed.max_steps}
        return self._begin(RunLog(folder, kind, config, label_ids=label_ids, run_id=run_id,
                                  command=["prefstudio", *argv]), argv)

    def _start_generate(self, extra: list[str], parsed) -> str:
        """``generate`` on a snapshot of the prompts short of K answers; the job writes its run
        folder and candidates.jsonl (what a resumed job skips), never the database."""
        model = _model_identity(parsed.model)
        rows = store.prompts_needing_responses(self.db, parsed.k, model, None, parsed.limit)
        if not rows:
            raise StoreError(f"nothing to do: every prompt has {parsed.k} responses from {model}")
        run_id = runlog.new_run_id("generate")
        folder = self.runs / run_id
        folder.mkdir(parents=True)
        (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": r["messages"]}) + "\n"
                                                      for r in rows), encoding="utf-8")
        argv = ["generate", "--prompts", str(folder / "prompts.jsonl"), "--out",
                str(folder / "candidates.jsonl"), "--run-dir", str(folder), *extra]
        return self._begin(RunLog(folder, "generate", {"options": extra, "prompts": len(rows)},
                                  run_id=run_id, command=["prefstudio", *argv]), argv)

    def _begin(self, log: RunLog, argv: list[str]) -> str:
        log.log("started by the studio: prefstudio " + shlex.join(argv))
        store.ingest_run_dir(self.db, log.dir)
        with self._launching:
            self._launch(log, argv)
        return log.id

    def resume(self, run_id: str) -> dict:
        """Run a failed or stopped job again in its folder: the trainer continues from its last
        checkpoint when it saved one (else it starts over)."""
        folder = self._folder(run_id)
        with self._launching:
            log = RunLog.reopen(folder)
            process = runlog.read_process(folder)
            if log.status not in ("failed", "stopped"):
                raise StoreError(f"run {run_id!r} is {log.status}: only a failed or stopped "
                                 "run can be resumed")
            with self._lock:
                if run_id in self.jobs:
                    raise StoreError(f"run {run_id!r}: its process has not ended yet")
            if not process or not process.get("argv"):
                raise StoreError(f"run {run_id!r} was not started by the studio: resume it "
                                 "with its own command")
            checkpoint = (folder / "checkpoint").is_dir()
            log.restart("resumed by the studio, " + ("from its last checkpoint" if checkpoint
                                                     else "from the start (no checkpoint)"))
            store.reopen_run(self.db, run_id)
            self._launch(log, process["argv"])
        return {"resumed": run_id, "from_checkpoint": checkpoint}

    def _launch(self, log: RunLog, argv: list[str]) -> None:
        with open(log.dir / "output.txt", "a") as out:
            proc = subprocess.Popen([*self.command, *argv], cwd=self.workspace, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_job_env(), start_new_session=True)
        # Popen returns once the child has exec'd: its start time and command line are final
        token = (process_facts(proc.pid) or (None, ""))[0]
        log.started_process(proc.pid, token, argv)
        store.update_run(self.db, log.id, pid=proc.pid)
        with self._lock:
            self.jobs[log.id] = Job(log.id, log.dir, proc.pid, token, proc)

    def stop(self, run_id: str) -> None:
        with self._lock:
            job = self.jobs.pop(run_id, None)
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

    def _folder(self, run_id: str) -> Path:
        folder = self.runs / str(run_id or "")
        if (not isinstance(run_id, str) or not re.fullmatch(r"[\w.-]+", run_id)
                or run_id.startswith(".") or not (folder / runlog.RUN_FILE).exists()):
            raise StoreError(f"unknown run id {run_id!r}")
        return folder

    # -- watching ----------------------------------------------------------------------------
    def watch(self) -> None:
        """Take in the run folders left by an earlier server and find its live jobs again,
        then start the watcher thread."""
        self.runs.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.runs.iterdir()):
            if not (folder / runlog.RUN_FILE).exists():
                continue
            self._ingest(folder)
            run = runlog.read_run(folder)
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
            ended, _ = job.exit_code()   # before the ingest: an ended job's folder is complete
            self._ingest(job.folder)
            if ended:
                with self._lock:
                    if self.jobs.pop(job.run_id, None) is None:
                        continue   # stopped or finished by another caller meanwhile
                self._record_end(job.folder, _why_ended(job))

    def _ingest(self, folder: Path) -> None:
        try:
            store.ingest_run_dir(self.db, folder)
        except StoreError as err:  # a half-written or broken folder must not stop the watcher
            print(f"prefstudio jobs: {folder.name}: {err}", file=sys.stderr)

    def _record_end(self, folder: Path, error: str, status: str = "failed") -> None:
        """Record the end of a job that could not record it itself (killed, crashed before its
        RunLog, stopped) in its run.json, then take the folder into the store."""
        log = RunLog.reopen(folder)
        if log.status in LIVE:
            log.finish(status, error=error)
        self._ingest(folder)

    # -- what the panel shows ----------------------------------------------------------------
    def overview(self) -> list[dict]:
        rows = []
        for run in store.list_runs(self.db):
            step, total = _progress(run, store.metrics(self.db, run["id"]))
            rows.append({"run": run["id"], "kind": run["kind"], "status": run["status"],
                         "step": step, "of": total,
                         "started": str(run["started_at"] or "")[:19],
                         "finished": str(run["finished_at"] or "")[:19],
                         "error": run.get("error") or ""})
        return rows

    def detail(self, run_id: str) -> dict:
        run = store.get_run(self.db, run_id)
        lineage = store.lineage(self.db, run_id)
        metrics = store.metrics(self.db, run_id)
        folder = Path(run["artifact_dir"] or "")
        own = runlog.read_run(folder) if (folder / runlog.RUN_FILE).exists() else {}
        step, total = _progress(run, metrics, own)
        return {"run": run_id, "kind": run["kind"], "status": run["status"],
                "error": run.get("error"), "progress": (step or 0) / total if total else None,
                "step": step or 0, "max_steps": total, "labels_used": lineage["labels"],
                "parents": lineage["parents"], "data_hash": lineage["data_hash"],
                "artifact_dir": run["artifact_dir"], "command": shlex.join(own.get("command") or []),
                "resumable": run["status"] in ("failed", "stopped")
                and runlog.read_process(folder) is not None,
                "checkpoint": (folder / "checkpoint").is_dir(), "metrics": metrics}


def _progress(run: dict, metrics: list[dict], own: dict | None = None) -> tuple[int | None, int | None]:
    """(last step, total steps) from the run's own records: its metrics, the max_steps of the
    config its trainer recorded, and (``own``: its run.json) the summary it finished with."""
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"] or "{}")
    summary = (own or {}).get("summary") or {}
    steps = [m["step"] for m in metrics] + ([summary["steps"]] if summary.get("steps") else [])
    return max(steps, default=None), config.get("max_steps") or summary.get("total_steps")


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


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _model_identity(model: str) -> str:
    """The model as generate records it (``policy.candidates.model_identity``, policy run
    folders aside): a served spec without credentials, a folder made absolute."""
    if model.startswith("openai:"):
        from ..judges.base import parse_judge_spec
        try:
            return parse_judge_spec(model, option="--model").public
        except ValueError as err:
            raise StoreError(f"options: {err}") from None
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def _find_again(folder: Path, run: dict) -> Job | None:
    """The live job of a run folder left by an earlier server, or None when it has ended."""
    process = runlog.read_process(folder)
    if process:   # started by a studio: the same pid, start token and run folder
        pid, token = process.get("pid"), process.get("start_token")
        return Job(run["id"], folder, pid, token) if is_same_process(pid, token, folder) else None
    facts = process_facts(run.get("pid"))   # started from the CLI: its pid, as it is now
    return Job(run["id"], folder, run["pid"], facts[0], folder_in_argv=False) if facts else None


def is_same_process(pid, start_token: str | None, folder: Path | None) -> bool:
    """Is ``pid`` alive and still the process that had ``start_token`` (and, for a studio
    job, its run folder on its command line)? A pid can be reused by a later process."""
    facts = process_facts(pid)
    if facts is None or (start_token is not None and facts[0] != start_token):
        return False
    return folder is None or str(folder) in facts[1]


def process_facts(pid) -> tuple[str, str] | None:
    """(start token, command line) of a live process; None if there is none or it is a zombie.
    The start token is its start time: from /proc on Linux, from ``ps`` elsewhere."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            return None
        state, *fields = stat[stat.rindex(")") + 2:].split()
        return None if state in ("Z", "X") else (fields[18], cmdline)   # field 22: starttime
    ps = subprocess.run(["ps", "-o", "stat=,lstart=,command=", "-p", str(pid)],
                        capture_output=True, text=True)
    parts = ps.stdout.split(None, 6)
    if ps.returncode != 0 or len(parts) < 7 or parts[0].startswith("Z"):
        return None
    return " ".join(parts[1:6]), parts[6]
