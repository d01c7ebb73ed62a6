"""What the Jobs page and the ``runs`` endpoint show of each run: status, step / total, an ETA,
the last lines it printed, its latest metrics, lineage, the exact command, and for a policy
evaluation the two sides' answers with their rewards."""
from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from pathlib import Path

from .. import runlog, store

LOG_LINES = 12
SAMPLES_SHOWN = 20
_BAR = re.compile(r"\d+%\||\|\s*\d+/\d+ \[")


def _json(value) -> dict:
    return value if isinstance(value, dict) else json.loads(value or "{}")


def _job(folder: Path) -> dict:
    try:
        return json.loads((folder / "job.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def progress(run: dict, metrics: list[dict], folder: Path) -> tuple[int | None, int | None]:
    """(last step, total steps): the metrics, the total the trainer's config or the studio's
    job.json gives, and the summary a finished run recorded."""
    own = runlog.read_run(folder) if (folder / runlog.RUN_FILE).exists() else {}
    summary = own.get("summary") or {}
    steps = [m["step"] for m in metrics] + ([summary["steps"]] if summary.get("steps") else [])
    total = (_json(run["config"]).get("max_steps") or _job(folder).get("total")
             or summary.get("total_steps"))
    try:
        total = int(total) if total else None
    except (TypeError, ValueError):
        total = None
    return max(steps, default=None), total


def latest(metrics: list[dict]) -> dict:
    """Each metric's value at its last step."""
    out: dict[str, float] = {}
    for m in metrics:          # (ordered by step)
        out[m["name"]] = m["value"]
    return out


def command_line(folder: Path) -> str:
    own = runlog.read_run(folder) if (folder / runlog.RUN_FILE).exists() else {}
    return shlex.join(own.get("command") or [])


def overview(db: store.Store, runs: Path) -> list[dict]:
    """Every run, newest first, as the ``runs`` endpoint returns it."""
    rows = []
    for run in store.list_runs(db):
        folder = Path(run["artifact_dir"] or runs / run["id"])
        metrics = store.metrics(db, run["id"])
        step, total = progress(run, metrics, folder)
        config = _json(run["config"])
        rows.append({"run_id": run["id"], "kind": run["kind"], "status": run["status"],
                     "step": step, "max_steps": total, "metrics": latest(metrics),
                     "parents": list(run["parents"] or []),
                     "round": config.get("round", (config.get("params") or {}).get("round")),
                     "command": command_line(folder), "error": run.get("error"),
                     "started": str(run["started_at"] or "")[:19]})
    return rows


def eta_seconds(folder: Path, step: int | None, total: int | None, status: str) -> float | None:
    """Seconds left at the pace so far since the process started (None until a step is done)."""
    process = runlog.read_process(folder)
    if status != "running" or not step or not total or not process:
        return None
    started = dt.datetime.fromisoformat(process["started_at"])
    elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    return max(0.0, elapsed / step * (total - step))


def log_tail(folder: Path, lines: int = LOG_LINES) -> list[str]:
    """The last lines the job printed, progress bars shown once (tqdm redraws with \\r)."""
    path = folder / "output.txt"
    if not path.exists():
        return []
    text = path.read_bytes()[-20000:].decode(errors="replace")
    out = []
    for line in text.split("\n"):
        parts = [p.strip() for p in line.split("\r") if p.strip()]
        if parts:
            out.append(parts[-1])
    return out[-lines:]


def samples(folder: Path) -> list[dict]:
    """eval_policy: the policy's and the reference's answers with their rewards."""
    path = folder / "samples.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[:SAMPLES_SHOWN]:
        r = json.loads(line)
        prompt = r["prompt"][-1]["content"] if isinstance(r["prompt"], list) else str(r["prompt"])
        rows.append({"prompt": prompt, "policy": r["policy"], "reward_policy": r["reward_policy"],
                     "reference": r["reference"], "reward_reference": r["reward_reference"]})
    return rows


def detail(db: store.Store, runs: Path, run_id: str) -> dict:
    run = store.get_run(db, run_id)
    lineage = store.lineage(db, run_id)
    metrics = store.metrics(db, run_id)
    folder = Path(run["artifact_dir"] or runs / run_id)
    own = runlog.read_run(folder) if (folder / runlog.RUN_FILE).exists() else {}
    step, total = progress(run, metrics, folder)
    return {"run": run_id, "kind": run["kind"], "status": run["status"],
            "error": run.get("error"), "progress": (step or 0) / total if total else None,
            "step": step or 0, "max_steps": total,
            "eta_seconds": eta_seconds(folder, step, total, run["status"]),
            "labels_used": lineage["labels"], "parents": lineage["parents"],
            "data_hash": lineage["data_hash"], "artifact_dir": run["artifact_dir"],
            "command": command_line(folder), "summary": own.get("summary") or {},
            "resumable": run["status"] in ("failed", "stopped")
            and ((folder / "job.json").exists() or runlog.read_process(folder) is not None),
            "checkpoint": (folder / "checkpoint").is_dir(), "log": log_tail(folder),
            "samples": samples(folder), "metrics": metrics}
