"""What the job reliability tests share: labelled data, a pause point inside the real trainer,
and waits that end on a state, not on a clock.

A test cannot kill a job "in the middle" by timing: a tiny model may finish first. Instead
the job's interpreter gets a ``sitecustomize`` (through PYTHONPATH) that stops the trainer
with SIGSTOP once per run folder, right after its first checkpoint is complete (the harness
writes ``checkpoint.tmp/`` and renames it to ``checkpoint/``: a resume from that moment finds
the checkpoint of step 2). The test then kills it, or kills the server around it,
at a known point. Nothing of the trainer is replaced: ``os.rename`` still renames first.
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

from annotate import runlog, store
from annotation_data import seed_tasks

PAUSED = "paused-by-test"   # a file in the run folder: the job has paused there once

PAUSE_HOOK = textwrap.dedent(f"""
    import os, signal, sys
    if "train" in sys.argv and "--out" in sys.argv and os.environ.get("PREFSTUDIO_TEST_PAUSE"):
        _rename = os.rename
        _mark = os.path.join(sys.argv[sys.argv.index("--out") + 1], {PAUSED!r})

        def _rename_then_pause(src, dst, *args, **kwargs):
            # the harness writes checkpoint.tmp/ and renames it to checkpoint/ when complete
            _rename(src, dst, *args, **kwargs)
            if os.path.basename(str(dst)) == "checkpoint" and not os.path.exists(_mark):
                open(_mark, "w").close()
                os.kill(os.getpid(), signal.SIGSTOP)

        os.rename = _rename_then_pause
""")


def install_pause_hook(folder: Path) -> dict:
    """Write the hook into ``folder``; returns the environment variables that enable it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(PAUSE_HOOK)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "PREFSTUDIO_TEST_PAUSE": "1"}


def rm_options(tiny_bert: Path, steps: int = 8) -> str:
    """A real reward-model job on the tiny encoder: a checkpoint every 2 steps."""
    return (f"--base {tiny_bert} --max-steps {steps} --save-every 2 --batch-size 1 "
            "--eval-fraction 0 --lr 1e-3")


def labelled(db: store.Store) -> None:
    """Tasks with a few human labels: something for a reward model to train on."""
    seed_tasks(db, pairwise=3, ranking=1)
    for name in ("ann", "bob"):
        for _ in range(2):
            tid = store.next_task(db, name)
            ids = store.get_task(db, tid)["response_ids"]
            store.submit_label(db, name, tid, [[i] for i in ids],
                               margin_level="better" if len(ids) == 2 else None)


def state_of(pid: int) -> str | None:
    """The process state letter (R, S, T = stopped, Z = zombie) or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def job_pid(folder: Path) -> int:
    return runlog.read_process(folder)["pid"]


def wait_until(check, what: str, timeout: float = 120.0, every: float = 0.1):
    """Poll ``check()`` until it is truthy (returns it); the timeout only guards a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting: {what}")


def wait_paused(folder: Path) -> int:
    """Wait until the job of ``folder`` stopped itself at its pause point; returns its pid."""
    def paused():
        process = runlog.read_process(folder)
        return process and (folder / PAUSED).exists() and state_of(process["pid"]) == "T"
    wait_until(paused, f"{folder.name} to pause after its first checkpoint")
    return job_pid(folder)


def metric_keys(folder: Path) -> set[tuple[int, str]]:
    """(step, name) of every metric line the job wrote."""
    lines = (folder / runlog.METRICS_FILE).read_text().splitlines()
    return {(r["step"], r["name"]) for r in map(json.loads, lines)}
