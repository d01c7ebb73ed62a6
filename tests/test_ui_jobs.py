"""Jobs started from the studio run as their own processes and are followed through run folders."""
import datetime
import json
import sys
import textwrap
import time

import pytest

from annotate import runlog, store
from annotate.runlog import RunLog
from annotate.ui import runview
from annotate.ui.jobs import JobRunner, process_facts
from annotation_data import seed_tasks
import studio_server
from cli import parse_command

# A stand-in trainer that keeps the CLI contract (`prefstudio train KIND --data F --out DIR`):
# it records its run with RunLog, loss going down, then finishes. A real process, real files.
FAKE_APP = textwrap.dedent("""
    import argparse, sys, time
    sys.path.insert(0, {root!r})
    from annotate.runlog import RunLog
    p = argparse.ArgumentParser()
    p.add_argument("command"); p.add_argument("kind")
    p.add_argument("--data"); p.add_argument("--out"); p.add_argument("--max-steps", type=int)
    a = p.parse_args()
    log = RunLog(a.out, a.kind, {{"max_steps": a.max_steps}}, parents=["rm-parent"])
    for step in range(1, a.max_steps + 1):
        log.metric(step, loss=1.0 / step, accuracy=step / a.max_steps)
        time.sleep(0.1)
    log.finish("done", final_loss=1.0 / a.max_steps)
""")


def fake_runner(db, tmp_path, **options) -> JobRunner:
    fake = tmp_path / "fake_trainer.py"
    fake.write_text(FAKE_APP.format(root=str(studio_server.ROOT)))
    return JobRunner(db, tmp_path / "workspace", command=[sys.executable, str(fake)],
                     parse_command=parse_command, **options)


def labelled_store(db):
    seed_tasks(db, pairwise=2, ranking=1)
    for name in ("ann", "bob"):
        tid = store.next_task(db, name)
        ids = store.get_task(db, tid)["response_ids"]
        store.submit_label(db, name, tid, [[i] for i in ids], margin_level="better"
                           if len(ids) == 2 else None)


def wait_for(runner, run_id, db, statuses=("done", "failed", "stopped"), timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runner.poll()
        if store.get_run(db, run_id)["status"] in statuses:
            return store.get_run(db, run_id)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish: {store.get_run(db, run_id)}")


def test_job_metrics_status_and_lineage_reach_the_store(db, tmp_path):
    labelled_store(db)
    runner = fake_runner(db, tmp_path)
    run_id = runner.start("rm", {"max_steps": 5})
    folder = tmp_path / "workspace" / "runs" / run_id
    snapshot = [json.loads(l) for l in (folder / "data.jsonl").read_text().splitlines()]
    assert len(snapshot) == 2  # the two current human labels, frozen for the job
    run = wait_for(runner, run_id, db)
    assert run["status"] == "done" and run["error"] is None
    losses = [m["value"] for m in store.metrics(db, run_id) if m["name"] == "loss"]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True)
    detail = runview.detail(db, runner.runs, run_id)
    assert detail["progress"] == 1.0 and detail["labels_used"] == 2
    assert detail["parents"] == ["rm-parent"]
    label_ids = {r["id"] for r in db.query("SELECT id FROM labels")}
    used = {r["label_id"] for r in db.query("SELECT label_id FROM run_inputs WHERE run_id = ?", [run_id])}
    assert used == label_ids


def test_refused_options_start_nothing(db, tmp_path):
    runner = JobRunner(db, tmp_path / "workspace", parse_command=parse_command)
    with pytest.raises(store.StoreError, match="options: --db is set by the studio itself"):
        runner.start("rm", {"options": "--db /elsewhere.duckdb"})
    with pytest.raises(store.StoreError, match=r"options: --out \(as --ou\) is set by the studio"):
        runner.start("rm", {"options": "--ou /tmp/escaped"})
    with pytest.raises(store.StoreError, match="job kind must be one of"):
        runner.start("bake")
    assert store.list_runs(db) == []
    assert not (tmp_path / "workspace" / "runs").exists()


def test_a_failing_job_shows_failed_and_the_server_stays_up(tmp_path):
    srv = studio_server.start(tmp_path, seed=labelled_store)
    try:
        admin = srv.session("admin1")
        # the real CLI (`python -m app`): `train sft` with a base model that does not exist
        # gets past the option check, then exits 2 with its one line
        answer = admin.post(srv.url + "api/start_job", json={"kind": "sft", "params": {
            "model": str(tmp_path / "no-such-model"), "max_steps": 1}})
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["run_id"]
        run = wait_for(srv.studio.jobs, run_id, srv.db)
        assert run["status"] == "failed"
        assert run["error"].startswith("exited with status 2: prefstudio train: "), run["error"]
        assert "no-such-model" in run["error"]
        # still serving: the annotator's queue is the 1 task nobody has labelled
        assert srv.client("ann").predict(api_name="/progress")["left"] == 1
        assert srv.studio.run_detail("admin1", run_id)["labels_used"] == 2  # lineage kept for the record
    finally:
        srv.close()


# A stand-in that draws a progress bar, then dies without finishing its run, or runs until stopped.
CRASHING_APP = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from annotate.runlog import RunLog
    out = sys.argv[sys.argv.index("--out") + 1]
    RunLog(out, "rm", {{"max_steps": 100}})
    print("loading the base model", flush=True)
    for step in range(3):
        sys.stdout.write(f"\\rtrain rm:  {{step}}%|#   | {{step}}/100 [00:01<00:10, 1.2it/s]")
        sys.stdout.flush()
    if "--max-steps" in sys.argv:
        time.sleep(600)   # runs until stopped
    os._exit(3)
""")


def crashing_runner(db, tmp_path):
    fake = tmp_path / "crashing_trainer.py"
    fake.write_text(CRASHING_APP.format(root=str(studio_server.ROOT)))
    return JobRunner(db, tmp_path / "workspace", command=[sys.executable, str(fake)],
                       parse_command=parse_command)


def test_a_job_that_dies_is_failed_with_its_last_line_not_a_progress_bar(db, tmp_path):
    labelled_store(db)
    runner = crashing_runner(db, tmp_path)
    run_id = runner.start("rm")
    run = wait_for(runner, run_id, db)
    assert (run["status"], run["error"]) == ("failed", "exited with status 3: loading the base model")
    assert run_id not in runner.jobs


def test_stop_ends_the_job_and_says_so(db, tmp_path):
    labelled_store(db)
    runner = crashing_runner(db, tmp_path)
    run_id = runner.start("rm", {"max_steps": 100})
    pid = runner.jobs[run_id].pid
    folder = tmp_path / "workspace" / "runs" / run_id
    wait_until_written = time.monotonic() + 60
    while "1/100" not in (folder / "output.txt").read_text() and time.monotonic() < wait_until_written:
        time.sleep(0.1)
    runner.stop(run_id)
    run = store.get_run(db, run_id)
    assert (run["status"], run["error"]) == ("stopped", "stopped from the studio")
    assert runner.jobs == {} and process_facts(pid) is None
    with pytest.raises(store.StoreError, match="is not running here"):
        runner.stop(run_id)


def test_the_queue_runs_one_job_at_a_time_and_stop_takes_a_queued_one_off(db, tmp_path):
    labelled_store(db)
    runner = fake_runner(db, tmp_path)
    first, second, third = (runner.start("rm", {"max_steps": 5}) for _ in range(3))
    assert list(runner.jobs) == [first] and runner.queue == [second, third]
    assert [store.get_run(db, r)["status"] for r in (second, third)] == ["queued", "queued"]
    runner.stop(third)
    run = store.get_run(db, third)
    assert (run["status"], run["error"]) == ("stopped", "stopped from the studio before it started")
    assert wait_for(runner, first, db)["status"] == "done"
    assert wait_for(runner, second, db)["status"] == "done"
    folder = lambda run_id: tmp_path / "workspace" / "runs" / run_id
    assert runlog.read_process(folder(second))["started_at"] >= runlog.read_run(folder(first))["finished_at"]
    assert runlog.read_process(folder(third)) is None   # never ran
    assert runner.resume(third) == {"resumed": third, "from_checkpoint": False}
    assert wait_for(runner, third, db)["status"] == "done"


def test_max_jobs_runs_jobs_side_by_side(db, tmp_path):
    labelled_store(db)
    runner = fake_runner(db, tmp_path, max_jobs=2)
    ids = [runner.start("rm", {"max_steps": 5}) for _ in range(3)]
    assert list(runner.jobs) == ids[:2] and runner.queue == ids[2:]
    for run_id in ids:
        assert wait_for(runner, run_id, db)["status"] == "done"


def test_eta_and_last_lines_of_a_running_job(tmp_path):
    folder = tmp_path / "run"
    log = RunLog(folder, "rm", {"max_steps": 10})
    started = time.time() - 20   # started 20 s ago, 2 of 10 steps done: 80 s to go
    log.started_process(1, None, ["train", "rm"])
    process = json.loads((folder / "process.json").read_text())
    process["started_at"] = datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat()
    (folder / "process.json").write_text(json.dumps(process))
    assert 79 <= runview.eta_seconds(folder, 2, 10, "running") <= 82
    assert runview.eta_seconds(folder, 0, 10, "running") is None
    assert runview.eta_seconds(folder, 2, 10, "done") is None
    (folder / "output.txt").write_text("loading\ntrain rm:  10%|#  | 1/10\rtrain rm:  20%|## | 2/10\n")
    assert runview.log_tail(folder) == ["loading", "train rm:  20%|## | 2/10"]
