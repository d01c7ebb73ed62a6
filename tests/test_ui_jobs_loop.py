"""The loop through the studio's endpoints, with real job processes on tiny models: a reward
model trained from the JSON route, a new round generated and judged in turn through the
queue, both evaluations; the annotator's queue fills with the new round; annotators and
strangers get 4xx from every job endpoint."""
import time

import pytest

from annotate import runlog, store
import studio_server
from test_ui_jobs import labelled_store

JOB_ENDPOINTS = {"start_job": {"kind": "rm", "params": {"max_steps": 1}}, "runs": {},
                 "stop_job": {"run_id": "rm-x"}, "resume_job": {"run_id": "rm-x"},
                 "new_round": {"policy": "smollm2-135m-instruct", "k": 2, "round": 1}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("jobs-loop"), seed=labelled_store)
    srv.studio.jobs.interval = 0.5
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def admin(server):
    return server.session("admin1")


def call(session, server, name, **kwargs):
    answer = session.post(server.url + f"api/{name}", json=kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_done(session, server, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = {r["run_id"]: r for r in call(session, server, "runs")}.get(run_id)
        if run and run["status"] in ("done", "failed", "stopped"):
            assert run["status"] == "done", run
            return run
        time.sleep(0.5)
    raise AssertionError(f"{run_id} did not end")


@pytest.fixture(scope="module")
def reward_model(server, admin, tiny_bert):
    run_id = call(admin, server, "start_job", kind="rm", params={
        "base": str(tiny_bert), "max_steps": 3, "batch_size": 1, "lr": 1e-3,
        "options": "--eval-fraction 0"})["run_id"]
    return wait_done(admin, server, run_id)


def test_start_job_trains_a_reward_model_and_runs_shows_it_done(reward_model, server):
    run = reward_model
    assert run["kind"] == "rm" and (run["step"], run["max_steps"]) == (3, 3)
    assert {"loss", "accuracy"} <= set(run["metrics"])
    # a metrics line per step, not every 10 steps
    steps = {m["step"] for m in store.metrics(server.db, run["run_id"]) if m["name"] == "loss"}
    assert steps == {1, 2, 3}
    assert run["command"].startswith("prefstudio train rm --data ")
    assert f"--out {server.workspace / 'runs' / run['run_id']}" in run["command"]
    assert "--max-steps 3" in run["command"] and "--eval-fraction 0" in run["command"]


def test_a_new_round_is_generated_then_judged_in_turn_and_reaches_the_annotators(
        server, admin, reward_model, tiny_lm):
    answer = call(admin, server, "new_round", policy=str(tiny_lm), k=2, round=1,
                  prompts="all", judge=f"rm:{reward_model['run_id']}")
    generate, judge = answer["run_id"], answer["judge_run_id"]
    runs = {r["run_id"]: r for r in call(admin, server, "runs")}
    assert runs[judge]["status"] == "queued"   # one job at a time: the judge waits its turn
    assert runs[generate]["command"].startswith("prefstudio generate --run-only --prompts ")
    wait_done(admin, server, generate)
    judged = wait_done(admin, server, judge)
    # the queue ran them one after the other: the judge started once generation had ended
    started = runlog.read_process(server.workspace / "runs" / judge)["started_at"]
    assert started >= runlog.read_run(server.workspace / "runs" / generate)["finished_at"]
    round1 = server.db.query("SELECT id FROM tasks WHERE round = 1")
    assert 1 <= len(round1) <= 3   # a task per prompt (where its 2 candidates differ)
    ai = server.db.query("SELECT task_id FROM labels WHERE source = 'ai'")
    assert {r["task_id"] for r in ai} >= {r["id"] for r in round1}
    assert judged["metrics"]["judged"] == judged["max_steps"] == len(ai)
    # the annotators' queues: cid (no labels yet) is handed round-1 tasks among the others
    cid, rounds = server.session("cid"), set()
    while (task := call(cid, server, "next_task")) is not None:
        rounds.add(task["round"])
        best_first = [[r["id"]] for r in task["responses"]]
        call(cid, server, "submit_label", task_id=task["id"], ranking=best_first,
             margin="better" if task["kind"] == "pairwise" else "")
    assert 1 in rounds


def test_evaluation_jobs_report_accuracy_and_policy_against_reference(
        server, admin, reward_model, tiny_lm):
    rm_id = reward_model["run_id"]
    eval_rm = call(admin, server, "start_job", kind="eval_rm", params={"model": rm_id})["run_id"]
    eval_policy = call(admin, server, "start_job", kind="eval_policy", params={
        "model": str(tiny_lm), "rm": rm_id, "max_prompts": 2, "max_new_tokens": 8})["run_id"]
    assert 0 <= wait_done(admin, server, eval_rm)["metrics"]["accuracy"] <= 1
    run = wait_done(admin, server, eval_policy)
    assert {"win_rate", "kl", "reward_policy", "reward_reference"} <= set(run["metrics"])
    assert rm_id in run["parents"]
    detail = server.studio.run_detail("admin1", eval_policy)
    assert len(detail["samples"]) == 2
    assert {"policy", "reference", "reward_policy", "reward_reference"} <= set(detail["samples"][0])


@pytest.mark.parametrize("name", sorted(JOB_ENDPOINTS))
def test_job_endpoints_refuse_annotators_and_strangers(server, name):
    before = len(store.list_runs(server.db))
    answer = server.session("ann").post(server.url + f"api/{name}", json=JOB_ENDPOINTS[name])
    assert answer.status_code == 400 and answer.json()["error"] == "only admins may do this"
    stranger = server.session(None).post(server.url + f"api/{name}", json=JOB_ENDPOINTS[name])
    assert 400 <= stranger.status_code < 500
    assert len(store.list_runs(server.db)) == before
