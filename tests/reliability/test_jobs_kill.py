"""kill -9 of a training job: the studio says why it failed, and resumes it from its checkpoint.

A real server (in this process), the real CLI as the job (`python -m app train rm`) on a tiny
encoder; the job pauses itself after its first checkpoint (jobs_support), is killed there,
and is resumed through the admin endpoint ``resume_job`` to the same final step.
"""
import os
import signal

import pytest
from gradio_client.exceptions import AppError

from annotate import runlog, store
import studio_server
from jobs_support import (PAUSED, install_pause_hook, labelled, rm_options, wait_paused,
                          wait_until)

STEPS = 8


def finished(srv, run_id):
    def check():
        srv.studio.jobs.poll()   # (the watcher thread polls too; this only saves its interval)
        run = store.get_run(srv.db, run_id)
        return run if run["status"] in ("done", "failed", "stopped") else None
    return wait_until(check, f"run {run_id} to end")


def test_a_killed_job_fails_clearly_and_resumes_from_its_checkpoint(tmp_path, tiny_bert,
                                                                      monkeypatch):
    for name, value in install_pause_hook(tmp_path / "hook").items():
        monkeypatch.setenv(name, value)
    srv = studio_server.start(tmp_path, seed=labelled)
    try:
        admin = srv.client("admin1")
        run_id = admin.predict("rm", {"options": rm_options(tiny_bert, STEPS), "source": "human"},
                               api_name="/start_job")["run_id"]
        folder = srv.workspace / "runs" / run_id
        assert runlog.read_run(folder)["command"][:3] == ["prefstudio", "train", "rm"]
        pid = wait_paused(folder)
        assert runlog.read_process(folder)["argv"][:2] == ["train", "rm"]
        with pytest.raises(AppError, match="is running: only a failed or stopped run"):
            admin.predict(run_id, api_name="/resume_job")

        os.kill(pid, signal.SIGKILL)
        run = finished(srv, run_id)
        assert run["status"] == "failed"
        assert run["error"] == "killed by signal 9 (SIGKILL)"
        assert runlog.read_run(folder)["status"] == "failed"   # the folder says so too
        detail = srv.studio.run_detail("admin1", run_id)
        assert detail["resumable"] and detail["checkpoint"] and detail["step"] < STEPS

        # an annotator may not resume it; an admin may
        with pytest.raises(AppError, match="only admins may do this"):
            srv.client("ann").predict(run_id, api_name="/resume_job")
        assert admin.predict(run_id, api_name="/resume_job") == {"resumed": run_id,
                                                                  "from_checkpoint": True}
        run = finished(srv, run_id)
        assert run["status"] == "done" and run["error"] is None and run["finished_at"]
        log = (folder / "log.txt").read_text()
        assert "resumed by the studio, from its last checkpoint" in log
        assert "resumed from step 2" in log   # the trainer's own word: the first checkpoint
        summary = runlog.read_run(folder)["summary"]
        assert summary["steps"] == summary["total_steps"] == STEPS
        detail = srv.studio.run_detail("admin1", run_id)
        assert (detail["step"], detail["max_steps"], detail["progress"]) == (STEPS, STEPS, 1.0)
        assert not detail["resumable"]
        assert (folder / PAUSED).exists()   # it paused once, and not again after the resume
        with pytest.raises(AppError, match="is done: only a failed or stopped run"):
            admin.predict(run_id, api_name="/resume_job")
        with pytest.raises(AppError, match="unknown run id"):
            admin.predict("../../etc", api_name="/resume_job")
    finally:
        srv.close()
