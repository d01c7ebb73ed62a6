"""kill -9 of the server while jobs run: the restarted server finds them again.

One job finishes while no server runs (the restart ingests it); the other is still running at
the restart (found by its pid, start token and run folder, and followed to its end). Both
end "done" in the store with every metric they wrote. The server is the real CLI
(`python app.py serve`), the jobs real `train rm` processes on a tiny encoder.
"""
import os
import signal
import subprocess
import sys

import requests

from annotate import runlog, store
from annotate.runlog import RunLog
from annotate.ui.jobs import JobRunner, process_facts
import studio_server
from cli import parse_command
from jobs_support import (install_pause_hook, job_pid, labelled, metric_keys, rm_options,
                          state_of, wait_paused, wait_until)

STEPS = 6


def serve(workspace, env):
    """`prefstudio serve` on a free port, in its own process; returns (process, server)."""
    port = studio_server.free_port()
    log = open(workspace / f"server-{port}.txt", "w")
    proc = subprocess.Popen([sys.executable, str(studio_server.ROOT / "app.py"), "serve",
                             "--db", str(workspace / "prefstudio.duckdb"), "--port", str(port),
                             "--max-jobs", "2"],
                            cwd=studio_server.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        assert proc.poll() is None, (workspace / f"server-{port}.txt").read_text()
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False
    wait_until(up, "the server to answer", every=0.3)
    return proc, studio_server.Server(url, None, None, workspace)


def statuses(server, session) -> dict:
    """run id -> (status, step, error) as the server's ``runs`` endpoint shows them."""
    runs = session.post(server.url + "api/runs", json={}).json()
    return {r["run_id"]: (r["status"], r["step"], r["error"] or "") for r in runs}


def test_jobs_outlive_a_killed_server_and_are_found_again(tmp_path, tiny_bert):
    workspace = tmp_path / "workspace"
    with store.Store(workspace / "prefstudio.duckdb") as db:
        store.add_user(db, "admin1", "admin", studio_server.PASSWORDS["admin1"])
        labelled(db)
    env = {**os.environ, **install_pause_hook(tmp_path / "hook"),
           "PREFSTUDIO_WORKSPACE": str(workspace)}
    first, server = serve(workspace, env)
    try:
        admin = server.client("admin1")
        ids = [admin.predict("rm", {"options": rm_options(tiny_bert, STEPS), "source": "human"},
                             api_name="/start_job")["run_id"] for _ in range(2)]
        folders = [workspace / "runs" / run_id for run_id in ids]
        pids = [wait_paused(folder) for folder in folders]
    finally:
        first.kill()   # SIGKILL: no clean-up of any kind
        first.wait()
    outlived, running = folders
    # one job finishes while no server runs...
    os.kill(pids[0], signal.SIGCONT)
    wait_until(lambda: runlog.read_run(outlived)["status"] == "done" and state_of(pids[0])
               in (None, "Z"), "the first job to finish on its own")
    # ...the other is still running (paused) when the server comes back
    second, server = serve(workspace, env)
    try:
        assert f"found again by a restarted studio: pid {pids[1]}" in (running / "log.txt").read_text()
        session = server.session("admin1")
        assert statuses(server, session)[ids[0]] == ("done", STEPS, "")
        assert statuses(server, session)[ids[1]][0] == "running"
        os.kill(pids[1], signal.SIGCONT)
        wait_until(lambda: statuses(server, session)[ids[1]] == ("done", STEPS, ""),
                   "the restarted server to see the found job finish", every=0.5)
    finally:
        second.kill()
        second.wait()
    with store.Store(workspace / "prefstudio.duckdb") as db:
        for run_id, folder in zip(ids, folders):
            run = store.get_run(db, run_id)
            assert (run["status"], run["error"]) == ("done", None)
            stored = {(m["step"], m["name"]) for m in store.metrics(db, run_id)}
            assert stored == metric_keys(folder) and (STEPS, "loss") in stored
            assert runlog.read_run(folder)["summary"]["steps"] == STEPS


def _job_folder(workspace, name):
    folder = workspace / "runs" / name
    RunLog(folder, "rm", {"max_steps": 3}, run_id=name)   # "running", as a job leaves it
    return folder


def test_a_live_pid_is_followed_only_when_it_is_still_that_job(db, tmp_path):
    """A pid alive after a restart may belong to another process by now (pids are reused)."""
    workspace = tmp_path / "workspace"
    ours, stoppable, stranger, reused, _ = (
        _job_folder(workspace, n) for n in ("ours", "stoppable", "stranger", "reused", "from-the-cli"))
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    job = subprocess.Popen([*sleeper, "--out", str(ours)], start_new_session=True)
    second = subprocess.Popen([*sleeper, "--out", str(stoppable)], start_new_session=True)
    other = subprocess.Popen(sleeper)
    try:
        token = process_facts(job.pid)[0]
        RunLog.reopen(ours).started_process(job.pid, token, ["train", "rm"])
        RunLog.reopen(stoppable).started_process(second.pid, process_facts(second.pid)[0], ["x"])
        RunLog.reopen(stranger).started_process(other.pid, process_facts(other.pid)[0], ["x"])
        RunLog.reopen(reused).started_process(job.pid, str(int(token) - 1), ["x"])
        runner = JobRunner(db, workspace, interval=3600, parse_command=parse_command)
        runner.watch()
        # a run the CLI started (no process.json) is followed by the pid in its run.json:
        # here the pid of this test process, alive throughout
        assert set(runner.jobs) == {"ours", "stoppable", "from-the-cli"}
        for name in ("stranger", "reused"):
            run = store.get_run(db, name)
            assert run["status"] == "failed"
            assert run["error"] == ("process ended without finishing (noticed when the studio "
                                    "restarted)")
        assert other.poll() is None   # a process that is not the job is never touched
        runner.stop("stoppable")      # a job found again can be stopped like any other
        assert second.wait(timeout=60) == -signal.SIGTERM
        run = store.get_run(db, "stoppable")
        assert (run["status"], run["error"]) == ("stopped", "stopped from the studio")
        job.kill()
        job.wait()
        runner.poll()
        run = store.get_run(db, "ours")
        assert (run["status"], run["error"]) == (
            "failed", "process ended without finishing (after the studio restarted: its exit "
                      "status is unknown)")
        assert set(runner.jobs) == {"from-the-cli"}
        assert store.get_run(db, "from-the-cli")["status"] == "running"
        runner.close()
    finally:
        for proc in (job, second, other):
            proc.kill()
            proc.wait()
