"""The studio's generate job (Jobs tab, kind ``generate``): a real ``prefstudio generate``
process against a real local chat-completions server, its run folder ingested by the watcher;
its options checked by the CLI's own parser; a failed job resumed asks only what is missing."""
from __future__ import annotations

import time

import pytest

from annotate import store
from annotate.ui.jobs import JobRunner
from chat_server import ChatServer, Reply, completion
from cli import parse_command

KEY = "sk-test-77aa88bb99cc00dd11ee"


def add_prompts(db, n: int) -> None:
    store.add_prompts(db, [store.prompt_row([{"role": "user", "content": f"Job prompt {i}?"}])
                           for i in range(n)])


def wait_for(runner, db, run_id, timeout=180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runner.poll()
        if not runner.jobs:
            return store.get_run(db, run_id)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish: {store.get_run(db, run_id)}")


def test_a_generate_job_fails_on_a_server_error_and_its_resume_asks_only_what_is_missing(
        db, tmp_path, monkeypatch):
    monkeypatch.setenv("JOB_KEY", KEY)      # the studio's environment is the job's
    broken = {"on": True}

    def brain(r):
        if broken["on"] and "prompt 2" in r.body["messages"][-1]["content"]:
            return Reply(500, {"error": "down"})
        q = r.body["messages"][-1]["content"]
        return completion([f"{q} answer {i}" for i in range(r.body.get("n", 1))])

    add_prompts(db, 4)
    runner = JobRunner(db, tmp_path / "ws", parse_command=parse_command, interval=0.2)
    with ChatServer(brain) as server:
        params = {"model": server.spec("m"), "k": 2, "temperature": "0.5", "concurrency": 1,
                  "max_retries": 0, "api_key_env": "JOB_KEY", "prompts": "all"}
        run_id = runner.start("generate", params)
        run = wait_for(runner, db, run_id)
        assert run["status"] == "failed" and "prompt 3 of 4" in run["error"]
        assert len(server.requests) == 3
        assert store.counts(db)["responses"] == 4          # the two prompts before the failure
        broken["on"] = False
        runner.resume(run_id)
        run = wait_for(runner, db, run_id)
        assert run["status"] == "done", run
        assert len(server.requests) == 3 + 2               # prompts 3 and 4 only
    assert store.counts(db)["responses"] == 8 and store.counts(db)["tasks"] == 4
    rows = db.query("SELECT DISTINCT model FROM responses")
    assert rows == [{"model": server.spec("m")}]
    for path in (tmp_path / "ws" / "runs" / run_id).iterdir():
        assert KEY not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("options, message", [
    ({"options": "--prompts other.jsonl"}, "--prompts is set by the studio itself"),
    ({"options": "--run-dir /tmp/x"}, "--run-dir is set by the studio itself"),
    ({"options": "--out x.jsonl"}, "--out is set by the studio itself"),
    ({"options": "--kk 3"}, "unrecognized arguments"),
])
def test_generate_job_options_are_checked_by_the_cli_parser(db, tmp_path, options, message):
    add_prompts(db, 1)
    runner = JobRunner(db, tmp_path / "ws", parse_command=parse_command)
    with pytest.raises(store.StoreError, match=message):
        runner.start("generate", {"model": "m", **options})
    assert store.list_runs(db) == []
