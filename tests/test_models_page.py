"""The Models & rounds tab on a real store with ingested run folders (written with RunLog, as
jobs write them; no training needed) and a real server: metrics, rounds, parents, labels,
lineage, rounds dashboard, comparing policies, adapter zips, and the hand-on buttons."""
import io
import json
import zipfile

import pytest

from annotate import store
from annotate.runlog import RunLog
from annotate.store import models as model_queries
from annotate.ui import modelplots
from annotation_data import seed_tasks
import studio_server

XSS = "<img src=x onerror=alert(1)>"
QUESTIONS = [[{"role": "user", "content": f"held-out question {i}"}] for i in range(3)]


def run_folder(workspace, run_id, kind, *, parents=(), label_ids=(), metrics=None,
               adapter=False, samples=None, responses=None):
    """A finished run folder as a job leaves it, ingested into the store by the caller."""
    folder = workspace / "runs" / run_id
    log = RunLog(folder, kind, {"round": None}, parents=parents, label_ids=label_ids, run_id=run_id)
    for step, values in (metrics or {}).items():
        log.metric(step, **values)
    if adapter:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_config.json").write_text('{"r": 4}')
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        (folder / ("rm.json" if kind == "rm" else "policy.json")).write_text('{"base": "tiny"}')
        (folder / "checkpoint").mkdir()              # not part of the download
        (folder / "checkpoint" / "optimizer.pt").write_bytes(b"\1" * 64)
    if samples is not None:
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if responses:
        log.record("responses", responses)
    log.finish("done")
    return folder


def build_project(db, workspace):
    """Round 0: two labelled tasks → reward model (+ its evaluation) → two policies (+ their
    evaluations on the same held-out prompts) → round-1 candidates generated from one."""
    tasks = [store.get_task(db, t) for t in seed_tasks(db, pairwise=2)]
    labels = [store.label_row(t, "ann", [[t["response_ids"][0]], [t["response_ids"][1]]]) for t in tasks]
    store.add_labels(db, labels)
    ids = [label["id"] for label in labels]
    folders = [
        run_folder(workspace, "rm-a", "rm", label_ids=ids, adapter=True,
                   metrics={5: {"eval_accuracy": 0.6}, 10: {"eval_accuracy": 0.75}}),
        run_folder(workspace, "eval-rm-a", "eval_rm", parents=["rm-a"],
                   metrics={0: {"accuracy": 0.8, "calibration_error": 0.05}}),
        run_folder(workspace, "ppo-a", "ppo", parents=["rm-a"], adapter=True),
        run_folder(workspace, "eval-ppo-a", "eval_policy", parents=["ppo-a", "rm-a"],
                   metrics={0: {"reward_gain": 0.4, "win_rate": 0.7, "kl": 1.5}},
                   samples=[{"prompt": q, "policy": f"ppo answer {i}", "reference": "ref",
                             "reward_policy": 1.0 + i, "reward_reference": 0.5}
                            for i, q in enumerate(QUESTIONS)]),
        run_folder(workspace, f"dpo-{XSS}", "dpo", label_ids=ids[:1], adapter=True),
        run_folder(workspace, "eval-dpo", "eval_policy", parents=[f"dpo-{XSS}"],
                   metrics={0: {"reward_gain": -0.1, "win_rate": 0.45, "kl": 0.3}},
                   samples=[{"prompt": q, "policy": f"{XSS} dpo answer {i}", "reference": "ref",
                             "reward_policy": -1.0, "reward_reference": 0.5}
                            for i, q in enumerate(QUESTIONS[1:], 1)]),
        run_folder(workspace, "generate-r1", "generate", parents=["ppo-a"],
                   responses=[{"prompt": QUESTIONS[0], "text": f"candidate {j}", "model": "ppo-a",
                               "group": "g0", "round": 1} for j in range(3)]),
    ]
    for folder in folders:
        store.ingest_run_dir(db, folder)
    return ids


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("models"))
    build_project(srv.db, srv.workspace)
    yield srv
    srv.close()


def test_models_carry_metrics_rounds_parents_and_labels(db, tmp_path):
    ids = build_project(db, tmp_path)
    models = {m["run_id"]: m for m in model_queries.model_runs(db)}
    assert set(models) == {"rm-a", "ppo-a", f"dpo-{XSS}"}       # evaluations are not models
    rm, ppo, dpo = models["rm-a"], models["ppo-a"], models[f"dpo-{XSS}"]
    assert (rm["accuracy"], rm["calibration_error"], rm["eval_run"]) == (0.8, 0.05, "eval-rm-a")
    assert (rm["labels"], rm["round"], rm["parents"]) == (2, 0, [])
    assert (ppo["reward_gain"], ppo["win_rate"], ppo["kl"]) == (0.4, 0.7, 1.5)
    assert (ppo["parents"], ppo["round"], ppo["labels"]) == (["rm-a"], 0, 0)   # round via its RM
    assert (dpo["labels"], dpo["win_rate"]) == (1, 0.45)
    assert store.browse(db, "labels", run="rm-a")[0]["id"] in ids          # Browse's run filter

    graph = model_queries.lineage_graph(db)
    edges = set(map(tuple, graph["edges"]))
    assert {("labels:0", "rm-a"), ("rm-a", "ppo-a"), ("ppo-a", "candidates:1"),
            ("labels:0", f"dpo-{XSS}")} <= edges
    columns = {n["id"]: n["column"] for n in graph["nodes"]}
    assert (columns["labels:0"], columns["rm-a"], columns["ppo-a"], columns["candidates:1"]) == (0, 1, 2, 3)

    rounds = {r["round"]: r for r in model_queries.rounds_summary(db)}
    assert rounds[0]["human_labels"] == 2 and rounds[0]["rm_accuracy"] == 0.8
    assert (rounds[0]["policy"], rounds[0]["win_rate"]) == ("ppo-a", 0.7)   # the round's best
    assert rounds[1]["human_labels"] == 0 and rounds[1]["rm_accuracy"] is None
    assert model_queries.next_round(db) == 2


def test_a_reward_model_never_evaluated_shows_its_training_split_accuracy(db, tmp_path):
    store.ingest_run_dir(db, run_folder(tmp_path, "rm-b", "rm", metrics={3: {"eval_accuracy": 0.55},
                                                                         9: {"eval_accuracy": 0.65}}))
    (rm,) = model_queries.model_runs(db)
    assert (rm["accuracy"], rm["calibration_error"], rm["eval_run"]) == (0.65, None, None)


def test_pictures_escape_every_name(db, tmp_path):
    build_project(db, tmp_path)
    svg = modelplots.lineage_svg(model_queries.lineage_graph(db))
    assert "<img" not in svg and "&lt;img src=x" in svg and "ppo-a" in svg
    png = modelplots.rounds_png(model_queries.rounds_summary(db))
    assert png.startswith('<img class="ps-rounds-plot"') and "base64," in png
    assert "No models yet" in modelplots.lineage_svg({"nodes": [], "edges": []})


def test_the_admin_sees_models_rounds_and_the_lineage(server):
    admin = server.client("admin1")
    models = {m["run_id"]: m for m in admin.predict(api_name="/models")}
    assert models["rm-a"]["accuracy"] == 0.8 and models["ppo-a"]["win_rate"] == 0.7
    rounds = admin.predict(api_name="/rounds")
    assert [r["round"] for r in rounds] == [0, 1] and rounds[0]["human_labels"] == 2
    session = server.session("admin1")
    fns = studio_server.endpoints(session, server.url)
    page = studio_server.raw_call(session, server.url, fns["ui_models_refresh"], [])
    assert page["error"] is None, page
    table, lineage, _, plot = page["output"][:4]
    assert {row[0] for row in table["data"]} == set(models)
    assert "ppo-a" in lineage and "<img src=x" not in lineage and "&lt;img" in lineage
    assert "data:image/png;base64," in plot


def test_two_policies_answers_side_by_side(server):
    admin = server.client("admin1")
    table = admin.predict("ppo-a", f"dpo-{XSS}", api_name="/compare_policies")
    rows = [dict(zip(table["headers"], r)) for r in table["data"]]
    assert [r["answer_a"] for r in rows] == ["ppo answer 1", "ppo answer 2"]   # shared prompts
    assert rows[0]["answer_b"] == f"{XSS} dpo answer 1" and rows[0]["reward_b"] == -1.0
    with pytest.raises(Exception, match="is a rm run, not one of"):
        admin.predict("ppo-a", "rm-a", api_name="/compare_policies")


def test_adapter_download_is_a_zip_of_the_adapter_only(server):
    path = server.client("admin1").predict("ppo-a", api_name="/download_adapter")
    names = set(zipfile.ZipFile(path).namelist())
    assert names == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                     "policy.json"}
    with pytest.raises(Exception, match="no reward model or policy run"):
        server.client("admin1").predict("eval-ppo-a", api_name="/download_adapter")


def test_hand_on_buttons_queue_a_judge_job_and_the_next_round(server):
    admin = server.client("admin1")
    judge = admin.predict("rm-a", api_name="/use_as_judge")
    assert judge["judge"] == "rm:rm-a" and judge["run_id"].startswith("judge-")
    nxt = admin.predict("ppo-a", 4, "all", api_name="/next_round_from_policy")
    assert nxt["round"] == 2 and nxt["run_id"].startswith("generate-")
    queued = {r["run_id"]: r for r in admin.predict(api_name="/runs")}
    assert queued[judge["run_id"]]["kind"] == "judge"
    assert queued[nxt["run_id"]]["kind"] == "generate" and "--round 2" in queued[nxt["run_id"]]["command"]
    with pytest.raises(Exception, match="not one of"):
        admin.predict("rm-a", 4, "all", api_name="/next_round_from_policy")


def test_browse_marks_and_unmarks_held_out_prompts(server):
    pid = store.prompt_row(QUESTIONS[0])["id"]
    admin = server.client("admin1")
    assert admin.predict(pid, True, api_name="/mark_held_out") == {"changed": 1, "held_out": 1}
    assert pid in store.held_out_ids(server.db)
    with pytest.raises(Exception, match="unknown prompt id"):
        admin.predict(f"{pid} nope", False, api_name="/mark_held_out")
    assert pid in store.held_out_ids(server.db)
    with pytest.raises(Exception, match="only admins"):
        server.client("ann").predict(pid, False, api_name="/mark_held_out")
    assert admin.predict(pid, False, api_name="/mark_held_out")["changed"] == 1
    assert store.held_out_ids(server.db) == set()


def test_the_json_route_answers_admins_and_refuses_annotators(server):
    admin, ann = server.session("admin1"), server.session("ann")
    r = admin.post(server.url + "api/models", json={})
    assert r.status_code == 200 and {m["run_id"] for m in r.json()} >= {"rm-a", "ppo-a"}
    pid = store.prompt_row(QUESTIONS[0])["id"]
    for name, body in [("models", {}), ("rounds", {}), ("use_as_judge", {"run_id": "rm-a"}),
                       ("mark_held_out", {"prompt_ids": [pid], "held_out": True}),
                       ("next_round_from_policy", {"run_id": "ppo-a", "k": 4, "prompts": "all"})]:
        r = ann.post(server.url + f"api/{name}", json=body)
        assert r.status_code == 400 and r.json()["error"] == "only admins may do this", name
    assert pid not in store.held_out_ids(server.db)
    r = admin.post(server.url + "api/mark_held_out", json={"prompt_ids": [pid], "held_out": True})
    assert r.json() == {"changed": 1, "held_out": 1}
    admin.post(server.url + "api/mark_held_out", json={"prompt_ids": [pid], "held_out": False})
