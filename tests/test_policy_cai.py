"""Constitutional AI's supervised stage (`train cai`): critique → revision with lineage in a
real store, labelable answer-vs-revision tasks, SFT on the revisions; bad input refused."""
import json

import pytest

from annotate import store
from annotate.runlog import read_metrics, read_records, read_run
from app import main
from harness.lora import LoraSettings
from policy.cai import CAIConfig, train_cai
from policy.generate import SamplingParams
from policy_helpers import metric_series, tiny_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


def _principles(tmp_path):
    path = tmp_path / "principles.md"
    path.write_text("# two principles\n\n## kind\nPrefer the kinder response.\n\n"
                    "## brief\nPrefer the shorter response.\n")
    return path


def test_critique_revision_loop_stores_lineage_tasks_and_sl_cai_learns(tiny_policy, tmp_path, db):
    prompts = tiny_prompts(6, seed=3)
    config = CAIConfig(model=str(tiny_policy), revisions=2, principles=str(_principles(tmp_path)),
                       round=3, max_steps=30, lr=1e-2, batch_size=4, save_every=0,
                       sampling=SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0),
                       lora=LoraSettings(r=8, alpha=16))
    out = train_cai(config, prompts, tmp_path / "cai")
    run = read_run(out)
    assert run["kind"] == "cai" and run["status"] == "done" and run["summary"]["steps"] == 30

    records = read_records(out, "responses")
    by_id = {store.response_id(store.prompt_id(r["prompt"]), r["text"]): r for r in records}
    steps = [r["gen_params"]["cai"]["step"] for r in records]
    assert steps.count("answer") == 6 and steps.count("critique") >= 6 and steps.count("revision") >= 6
    for rid, r in by_id.items():
        cai = r["gen_params"]["cai"]
        if cai["step"] == "answer":
            continue
        # every critique and revision names the response it works on, of the same prompt, and
        # the principle it followed; a revision its critique too
        parent = by_id[cai["parent"]]
        assert parent["prompt"] == r["prompt"] and cai["principle"] in ("kind", "brief")
        assert cai["revision"] in (1, 2)
        expected_parent = "answer" if cai["revision"] == 1 else "revision"
        assert parent["gen_params"]["cai"]["step"] in (expected_parent, "answer")
        if cai["step"] == "revision" and cai["critique"] is not None:
            critique = by_id[cai["critique"]]["gen_params"]["cai"]
            assert critique["step"] == "critique" and critique["parent"] == cai["parent"]
            assert critique["principle"] == cai["principle"]
    # the SFT chats are each prompt followed by its last revision
    assert metric_series(read_metrics(out), "revised_prompts")[0] == 6

    # into a real store: the answer and its revisions are one task, labelable like any other
    added = store.ingest_run_dir(db, out)
    tasks = db.query("SELECT id, response_ids, kind, round FROM tasks")
    assert added["responses"] == len(records) and added["tasks"] == len(tasks) == 6
    stored = {r["id"]: json.loads(r["gen_params"]) for r in
              db.query("SELECT id, gen_params FROM responses WHERE run_id = ?", [run["id"]])}
    assert set(stored) == set(by_id)
    for task in tasks:
        kinds = [stored[rid]["cai"]["step"] for rid in task["response_ids"]]
        assert kinds[0] == "answer" and set(kinds[1:]) == {"revision"} and task["round"] == 3
        assert task["kind"] == ("pairwise" if len(kinds) == 2 else "ranking")
    task = store.next_task(db, "alice")
    assert task in {t["id"] for t in tasks}

    # SL-CAI: the SFT loss on the revisions goes down
    loss = metric_series(read_metrics(out), "loss")
    assert len(loss) == 30 and sum(loss[-5:]) / 5 < 0.7 * sum(loss[:5]) / 5, loss

    # the same run with more steps continues training on the revisions it made (no new samples)
    config.max_steps = 33
    train_cai(config, prompts, out)
    assert read_run(out)["summary"]["steps"] == 33 and read_records(out, "responses") == records


def test_train_cai_from_the_command_line_into_the_store(tiny_policy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in tiny_prompts(3, seed=1)))
    db_file = tmp_path / "ws" / "prefstudio.duckdb"
    out = tmp_path / "cai"
    assert main(["train", "cai", "--db", str(db_file), "--prompts", str(prompts), "--model",
                 str(tiny_policy), "--max-steps", "2", "--max-new-tokens", "6",
                 "--temperature", "1.0", "--principles", str(_principles(tmp_path)),
                 "--out", str(out)]) == 0
    with store.Store(db_file, read_only=True) as db:
        rows = db.query("SELECT gen_params FROM responses WHERE run_id = ?", [read_run(out)["id"]])
        assert {json.loads(r["gen_params"])["cai"]["step"] for r in rows} >= {"answer", "revision"}
        assert db.query("SELECT kind, status FROM runs") == [{"kind": "cai", "status": "done"}]


@pytest.mark.parametrize("argv, message", [
    (["--principles", "{tmp}/missing.md"], "train cai: {tmp}/missing.md: cannot read"),
    (["--revisions", "0"], "revisions must be between 1 and 8"),
    (["--rm", "x"], "--rm is not an option of this trainer (train cai;"),
])
def test_bad_cai_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["train", "cai", "--prompts", str(prompts), *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
