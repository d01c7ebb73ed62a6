"""Run folders written by RunLog reach the database through ingest_run_dir, idempotently."""
import json

import pytest

from annotate import store
from annotate.runlog import RunLog

PROMPT = [{"role": "user", "content": "Name a colour."}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]


def generation(folder, texts=("red", "blue", "green"), prompt=PROMPT, group="g1"):
    return [{"prompt": prompt, "text": t, "model": "tiny", "adapter": None,
             "gen_params": {"temperature": 0.7, "seed": i}, "group": group}
            for i, t in enumerate(texts)]


def test_a_generation_run_becomes_responses_and_one_task_per_group(db, tmp_path):
    run = RunLog(tmp_path / "gen", "generate", {"k": 3, "model": "tiny"})
    run.record("responses", generation(run.dir))
    run.record("responses", generation(run.dir, ("apple", "pear"), OTHER, "g2"))
    run.metric(1, tokens_per_s=12.5)
    counts = store.ingest_run_dir(db, run.dir)
    # still running: responses are in, but no task is made of a group that may still grow
    assert (counts["runs"], counts["prompts"], counts["responses"], counts["tasks"]) == (1, 2, 5, 0)
    assert counts["metrics"] == 1 and store.get_run(db, run.id)["status"] == "running"

    run.finish(status="done")
    counts = store.ingest_run_dir(db, run.dir)
    assert (counts["runs"], counts["responses"], counts["tasks"]) == (0, 0, 2)
    tasks = {t["kind"]: t for t in store.list_tasks(db)}
    assert set(tasks) == {"ranking", "pairwise"} and len(tasks["ranking"]["response_ids"]) == 3
    responses = store.list_responses(db)
    assert {r["run_id"] for r in responses} == {run.id}
    assert responses[0]["gen_params"]["temperature"] == 0.7
    got = store.get_run(db, run.id)
    assert got["status"] == "done" and got["finished_at"] is not None
    assert got["config"] == {"k": 3, "model": "tiny"} and got["artifact_dir"] == str(run.dir.resolve())

    again = store.ingest_run_dir(db, run.dir)
    assert all(again[k] == 0 for k in ("runs", "metrics", "run_inputs", "prompts", "responses",
                                       "tasks", "labels", "scores"))


def test_a_judge_run_adds_labels_and_a_rerun_supersedes_them(db, tmp_path):
    p = store.prompt_row(PROMPT)
    rs = [store.response_row(p["id"], t) for t in ("red", "blue")]
    store.add_prompts(db, [p])
    store.add_responses(db, rs)
    task = store.task_row(p["id"], [r["id"] for r in rs])
    store.add_tasks(db, [task])
    a, b = task["response_ids"]

    run = RunLog(tmp_path / "judge", "judge", {"judge": "local:tiny"})
    first = store.label_row(task, "tiny-judge", [[a], [b]], source="ai", judge="local:tiny",
                            soft_prob=0.9, details={"orders": ["ab", "ba"]})
    run.record("labels", [first])
    assert store.ingest_run_dir(db, run.dir)["labels"] == 1
    (pair,) = store.pairs(db)
    assert pair["chosen"] == "red" and pair["source"] == "ai" and pair["soft_prob"] == pytest.approx(0.9)

    # the folder grows: a second verdict by the same judge replaces the first, nothing is deleted
    second = store.label_row(task, "tiny-judge", [[b], [a]], source="ai", judge="local:tiny", soft_prob=0.8)
    run.record("labels", [second])
    assert store.ingest_run_dir(db, run.dir)["labels"] == 1
    assert store.ingest_run_dir(db, run.dir)["labels"] == 0
    (pair,) = store.pairs(db)
    assert pair["chosen"] == "blue" and pair["soft_prob"] == pytest.approx(0.8)
    history = {h["id"]: h for h in store.label_history(db)}
    assert history[first["id"]]["superseded_by"] == second["id"]
    assert json.loads(history[first["id"]]["details"]) == {"orders": ["ab", "ba"]}


def test_training_run_lineage_metrics_and_scores(db, tmp_path):
    p = store.prompt_row(PROMPT)
    r = store.response_row(p["id"], "red")
    store.add_prompts(db, [p])
    store.add_responses(db, [r])
    run = RunLog(tmp_path / "rm", "rm", {"lr": 1e-4}, parents=["sft-1"], data_hash="abc",
                 label_ids=["l1", "l2", "l1"])
    for step in range(3):
        run.metric(step, loss=1.0 / (step + 1), accuracy=0.5)
    run.record("scores", [{"response_id": r["id"], "scorer": "rm-1", "value": 0.25, "kept": True},
                          {"prompt": PROMPT, "text": "red", "scorer": "rm-2", "value": -1}])
    run.finish(status="done", accuracy=0.5)
    counts = store.ingest_run_dir(db, run.dir)
    assert (counts["metrics"], counts["run_inputs"], counts["scores"]) == (6, 2, 2)
    assert store.lineage(db, run.id) == {"run": run.id, "kind": "rm", "parents": ["sft-1"],
                                          "labels": 2, "data_hash": "abc"}
    assert [m["value"] for m in store.metrics(db, run.id) if m["name"] == "loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    scores = db.query("SELECT scorer, value, kept, run_id FROM scores ORDER BY scorer")
    assert scores == [{"scorer": "rm-1", "value": 0.25, "kept": True, "run_id": run.id},
                      {"scorer": "rm-2", "value": -1.0, "kept": None, "run_id": run.id}]


def test_a_finished_status_is_not_moved_back_to_running(db, tmp_path):
    run = RunLog(tmp_path / "r", "sft", {})
    store.ingest_run_dir(db, run.dir)
    store.update_run(db, run.id, status="stopped")        # e.g. the server killed the job
    store.ingest_run_dir(db, run.dir)                       # run.json still says running
    assert store.get_run(db, run.id)["status"] == "stopped"


def test_a_half_written_last_line_waits_for_the_next_ingest(db, tmp_path):
    run = RunLog(tmp_path / "g", "generate", {})
    run.record("responses", generation(run.dir)[:1])
    with open(run.dir / "responses.jsonl", "a") as f:
        f.write('{"prompt": [{"role": "user", "content": "Name a colour."}], "te')
    assert store.ingest_run_dir(db, run.dir)["responses"] == 1


def test_a_bad_record_names_file_and_line_and_changes_nothing(db, tmp_path):
    run = RunLog(tmp_path / "g", "generate", {})
    rows = generation(run.dir)
    rows[1]["text"] = ""
    run.record("responses", rows)
    with pytest.raises(store.StoreError, match=r"responses\.jsonl:2: text: response text must be"):
        store.ingest_run_dir(db, run.dir)
    assert store.counts(db)["responses"] == 0 and store.list_runs(db) == []

    judge = RunLog(tmp_path / "j", "judge", {})
    judge.record("labels", [{"task_id": "nope", "annotator": "j", "ranking": [["a"], ["b"]]}])
    with pytest.raises(store.StoreError, match=r"labels\.jsonl:1: task_id: unknown task id 'nope'"):
        store.ingest_run_dir(db, judge.dir)
    assert store.list_runs(db) == []

    with pytest.raises(store.StoreError, match="no run.json"):
        store.ingest_run_dir(db, tmp_path)
