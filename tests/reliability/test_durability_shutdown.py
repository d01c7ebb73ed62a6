"""A clean stop leaves the whole database in the ``.duckdb`` file: no ``.wal`` beside it.

SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C) of `prefstudio serve` while annotators
are submitting, and SIGTERM of a CLI command that writes (`prefstudio judge`): the process
ends by itself, no ``.wal`` remains, and a copy of the ``.duckdb`` file alone (the backup a
careless admin makes) holds every label that was acknowledged.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotate import store
from chat_server import ChatServer, verdict
from judge_helpers import add_task
from studio_process import Studio, annotate, seed, stored, wal_of

ROOT = Path(__file__).resolve().parents[2]


def copy_alone(db_path: Path, to: Path) -> Path:
    """Copy only the ``.duckdb`` file elsewhere, as a backup that forgets the ``.wal`` would."""
    to.mkdir()
    return Path(shutil.copy2(db_path, to / db_path.name))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_server_checkpoints_every_acknowledged_label(tmp_path, sig):
    workspace = tmp_path / "ws"
    db_path = workspace / "prefstudio.duckdb"
    users = seed(db_path, tasks=400, annotators=8, required=2)
    studio = Studio(workspace, db_path)
    try:
        first = annotate(studio.port, users, ["rest", "run"], count=10)
        assert not first.errors and len(first.acked) == 80
        assert wal_of(db_path).exists()          # the labels so far live in the log

        # the signal arrives while 8 annotators are still submitting
        storm = annotate(studio.port, users, ["rest"], stop_pid=studio.proc.pid, stop_after=40,
                         stop_signal=sig)
        status = studio.proc.wait(timeout=60)
    finally:
        studio.ensure_dead()
    assert status == 0
    assert not wal_of(db_path).exists()
    acked = first.ids | storm.ids
    assert len(storm.acked) >= 40
    # every annotator was stopped by the shutdown: cut off, or told to try again
    assert storm.cut_off + len(storm.errors) == len(users)
    assert all("shutting down" in e for e in storm.errors), storm.errors
    backup = stored(copy_alone(db_path, tmp_path / "backup"))
    assert acked <= backup["ids"], f"{len(acked - backup['ids'])} acknowledged labels not in the copy"
    assert backup["tasks_over_overlap"] == 0 and backup["annotator_twice_on_a_task"] == 0


def test_sigterm_of_a_writing_cli_command_leaves_no_wal(tmp_path):
    """`prefstudio judge` stopped by SIGTERM mid-run: what it judged is ingested, the store
    closed and checkpointed, exit status 130 (interrupted)."""
    db_path = tmp_path / "ws" / "prefstudio.duckdb"
    with store.Store(db_path) as db:
        for i in range(40):
            add_task(db, f"question {i}", [f"q={i} answer", "q=1 other"])
    out = tmp_path / "run"
    with ChatServer(lambda r: slow(verdict(0.8))) as server:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "judge", "--db", str(db_path), "--judge", server.spec(),
             "--batch-size", "1", "--concurrency", "1", "--out", str(out)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            labels = out / "labels.jsonl"
            deadline = time.monotonic() + 120
            while (not labels.exists() or len(labels.read_text().splitlines()) < 3) \
                    and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not wal_of(db_path).exists()
    judged = len(labels.read_text().splitlines())
    assert 3 <= judged < 40
    with store.Store(copy_alone(db_path, tmp_path / "backup"), read_only=True) as db:
        assert len(store.ai_labels(db)) == judged


def slow(reply):
    reply.delay = 0.1   # a judge that takes its time: the signal finds the run half done
    return reply
