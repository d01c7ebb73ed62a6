"""Held-out prompts: marked at import (flag or per row) or by id; never training data (labels,
pairs, sampled prompts); what `eval policy` measures on by default; an old database migrates."""
import json
import types

import duckdb
import pytest

import cli.data
from annotate import formats, store, trainingdata
from annotate.runlog import read_run
from annotate.store.schema import LATEST, MIGRATIONS
from annotation_data import seed_tasks
from app import main


def labelled_store(db, n=3):
    """``n`` pairwise tasks, each labelled once (first response preferred); returns the tasks."""
    tasks = [store.get_task(db, tid) for tid in seed_tasks(db, pairwise=n)]
    store.add_labels(db, [store.label_row(t, "ann", [[t["response_ids"][0]], [t["response_ids"][1]]],
                                          margin_level="better") for t in tasks])
    return tasks


def cli_args(db_path, **extra):
    base = dict(db=str(db_path), kind="dpo", data=None, prompts=None, source=None,
                min_agreement=None, label_rounds=None, principle=None)
    return types.SimpleNamespace(**{**base, **extra})


def test_a_version_4_database_migrates_and_its_prompts_can_be_held_out(tmp_path):
    path = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
    for number, sql in enumerate(MIGRATIONS[:4], 1):
        con.execute(sql)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
    con.execute("""INSERT INTO prompts (id, messages, source) VALUES
                   ('p1', '[{"content":"hello","role":"user"}]', 'old')""")
    con.close()
    with store.Store(path) as db:
        assert db.version == LATEST >= 5
        assert store.held_out_ids(db) == set()
        assert store.mark_held_out(db, ["p1"]) == 1
        assert store.prompt_messages(db, held_out=True) == [[{"content": "hello", "role": "user"}]]
        with pytest.raises(store.StoreError, match="unknown prompt id 'nope'"):
            store.mark_held_out(db, ["p1", "nope"], held_out=False)
        assert store.held_out_ids(db) == {"p1"}       # the refused call changed nothing
        assert store.mark_held_out(db, ["p1"], held_out=False) == 1
        assert store.held_out_ids(db) == set()


def test_import_marks_prompts_held_out_by_flag_and_by_row(tmp_path, capsys):
    db_path = tmp_path / "ws.duckdb"
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "train me"}, {"prompt": "test me", "held_out": True},
        {"prompt": "also train", "held_out": False}]))
    assert main(["import", str(rows), "--db", str(db_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["held_out"] == 1
    whole = tmp_path / "eval.csv"
    whole.write_text('prompt,held_out\n"a csv prompt",\n"another",true\n')
    assert main(["import", str(whole), "--db", str(db_path), "--held-out"]) == 0
    assert "2 prompts newly marked held out" in capsys.readouterr().out
    with store.Store(db_path) as db:
        held = {m[0]["content"] for m in store.prompt_messages(db, held_out=True)}
        free = {m[0]["content"] for m in store.prompt_messages(db, held_out=False)}
        before = sorted(store.held_out_ids(db))
    assert held == {"test me", "a csv prompt", "another"} and free == {"train me", "also train"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "new one"}) + "\n"
                   + json.dumps({"prompt": "x", "held_out": "maybe"}) + "\n")
    assert main(["import", str(bad), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl:2: held_out: must be true or false" in err
    with store.Store(db_path) as db:   # all or nothing: the good row was not written either
        assert store.counts(db)["prompts"] == 5
        assert sorted(store.held_out_ids(db)) == before


def test_held_out_prompts_never_reach_the_training_data(tmp_path):
    db_path = tmp_path / "ws.duckdb"
    with store.Store(db_path) as db:
        tasks = labelled_store(db)
        store.mark_held_out(db, [tasks[0]["prompt_id"]])
        held_label = db.scalar("SELECT id FROM labels WHERE task_id = ?", [tasks[0]["id"]])
        snapshot = tmp_path / "snapshot.jsonl"    # what a studio job trains from
        formats.export(db, "rankings", snapshot)
        prompts_snapshot = tmp_path / "prompts.jsonl"
        formats.export(db, "prompts", prompts_snapshot)
        everything = trainingdata.from_store(db, include_held_out=True)
    held_text = "Question 0:"
    assert any(held_text in json.dumps(p.prompt) for p in everything.pairs)  # the test can fail

    for kind in ("sft", "dpo", "rm"):
        args = cli_args(db_path, kind=kind)
        data = cli.data.preference_data(args)
        assert len(data.pairs) == 2 and held_label not in data.label_ids
        assert not any(held_text in json.dumps(p.prompt) for p in data.pairs)
    # `eval rm --labels held-out`: nothing but the held-out prompt's labels (the studio's
    # eval_rm form default, so the Models page's accuracy is on what no model trained on)
    only = cli.data.preference_data(cli_args(db_path, kind="rm"), include_held_out=True,
                                    only_held_out=True)
    assert only.label_ids == [held_label] and held_text in json.dumps(only.pairs[0].prompt)
    only_file = cli.data.preference_data(cli_args(db_path, db=None), str(snapshot),
                                         include_held_out=True, only_held_out=True)
    assert len(only_file.pairs) == 1 and held_text in json.dumps(only_file.pairs[0].prompt)
    chats, lineage = cli.data.policy_data(cli_args(db_path, kind="sft"))
    assert len(chats) == 2 and not any(held_text in json.dumps(c) for c in chats)
    assert held_label not in lineage["label_ids"]
    from_snapshot = cli.data.preference_data(cli_args(db_path, db=None), str(snapshot))
    assert len(from_snapshot.pairs) == 2
    assert not any(held_text in json.dumps(p.prompt) for p in from_snapshot.pairs)

    sampled = cli.data.training_prompts(cli_args(db_path, kind="rs"))
    from_file = cli.data.training_prompts(cli_args(db_path, kind="rs", prompts=str(prompts_snapshot)))
    for prompts in (sampled, from_file):
        assert len(prompts) == 2 and not any(held_text in json.dumps(p) for p in prompts)
    measured = cli.data.evaluation_prompts(cli_args(db_path))
    assert len(measured) == 1 and held_text in json.dumps(measured)


def test_rs_and_sft_runs_from_the_store_never_see_a_held_out_prompt(tmp_path, tiny_policy, capsys):
    db_path = tmp_path / "ws.duckdb"
    with store.Store(db_path) as db:
        tasks = labelled_store(db)
        store.mark_held_out(db, [tasks[0]["prompt_id"]])
        held_label = db.scalar("SELECT id FROM labels WHERE task_id = ?", [tasks[0]["id"]])
    rs_out = tmp_path / "rs"
    assert main(["train", "rs", "--reward", "length", "--model", str(tiny_policy), "--k", "2",
                 "--rounds", "1", "--max-steps", "1", "--max-new-tokens", "3",
                 "--db", str(db_path), "--out", str(rs_out), "--json"]) == 0, capsys.readouterr().err
    sampled = [json.loads(line)["prompt"] for line in (rs_out / "responses.jsonl").read_text().splitlines()]
    sampled_ids = {store.prompt_row(p)["id"] for p in sampled}
    assert sampled_ids == {t["prompt_id"] for t in tasks[1:]}
    sft_out = tmp_path / "sft"
    assert main(["train", "sft", "--model", str(tiny_policy), "--max-steps", "1",
                 "--db", str(db_path), "--out", str(sft_out), "--json"]) == 0, capsys.readouterr().err
    inputs = json.loads((sft_out / "inputs.json").read_text())
    trained_on = inputs["label_ids"] if isinstance(inputs, dict) else inputs
    assert len(trained_on) == 2 and held_label not in trained_on
    assert read_run(sft_out)["status"] == "done"


def test_eval_policy_from_the_store_measures_on_the_held_out_prompts(tmp_path, tiny_policy, capsys):
    from test_policy_eval import untrained_policy
    db_path = tmp_path / "ws.duckdb"
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "held_out": p.startswith("test")}) + "\n"
                            for p in ["train one", "test one", "train two", "test two"]))
    assert main(["import", str(rows), "--db", str(db_path)]) == 0
    policy = untrained_policy(tiny_policy, tmp_path / "policy")
    assert main(["eval", "policy", "--model", str(policy), "--reward", "length", "--db",
                 str(db_path), "--max-new-tokens", "3", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    measured = [json.loads(line)["prompt"][-1]["content"]
                for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert result["n"] == 2 and sorted(measured) == ["test one", "test two"]
    empty = tmp_path / "empty.duckdb"
    with store.Store(empty):
        pass
    assert main(["eval", "policy", "--model", str(policy), "--reward", "length",
                 "--db", str(empty)]) == 2
    assert "has no held-out prompts" in capsys.readouterr().err


def test_a_studio_training_job_counts_no_label_of_a_held_out_prompt_as_used(db, tmp_path):
    """The labels a job lists as used (lineage, "labels used") are the ones it may train on: a
    reward model never sees a held-out prompt's labels; its evaluation does."""
    from annotate.ui import jobinputs
    from test_ui_jobs import labelled_store
    labelled_store(db)
    rows = store.rankings(db, source="both", kind=None)
    held = rows[0]["task_id"]
    store.mark_held_out(db, [store.get_task(db, held)["prompt_id"]], True)
    _, used = jobinputs.write_labels(db, tmp_path, training=True)
    _, evaluated = jobinputs.write_labels(db, tmp_path, training=False)
    assert sorted(evaluated) == sorted(r["label_id"] for r in rows)
    assert sorted(used) == sorted(r["label_id"] for r in rows if r["task_id"] != held)
