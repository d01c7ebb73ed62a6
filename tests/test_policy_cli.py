"""`prefstudio train sft|rs|dpo` through the real command line."""
import json
import subprocess
import sys

import pytest

from annotate.runlog import read_run
from app import main

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi how are you"}]


def test_train_sft_from_a_chat_file(tiny_policy, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"messages": CHAT}) for _ in range(4)) + "\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "app.py", "train", "sft", "--data", str(data),
                           "--model", str(tiny_policy), "--max-steps", "3", "--lr", "1e-2",
                           "--packing", "--lora-r", "4", "--out", str(out), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    run = read_run(out)
    assert result["run"] == run["id"] and result["summary"]["steps"] == 3
    assert run["config"]["packing"] is True and run["config"]["lora"]["r"] == 4
    assert (out / "policy.json").exists() and (out / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "rs", "--reward", "length"], "--data is not an option of this trainer"),
    (["train", "sft", "--beta", "0.1"], "--beta is not an option of this trainer"),
    (["train", "dpo", "--packing"], "--packing is not an option of this trainer"),
    (["train", "dpo", "--max-length", "1"], "--max-length must be at least 2 tokens"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, message):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n")
    code = main(argv + ["--data", str(data), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_bad_chat_file_names_line_and_field(tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": [CHAT[0]]}) + "\n")
    assert main(["train", "sft", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"prefstudio train: train sft: {data}:2: messages: no assistant turn to train on"


def test_train_dpo_from_a_pairs_file(tiny_policy, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"tell me about the {w}", "chosen": f"the {w} is great zebra",
             "rejected": f"the {w} is bad"} for w in ["sun", "moon", "cat", "dog"]]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "dpo"
    assert main(["train", "dpo", "--data", str(data), "--model", str(tiny_policy),
                 "--max-steps", "4", "--batch-size", "2", "--lr", "5e-3", "--loss", "ipo",
                 "--beta", "0.5", "--max-length", "33", "--out", str(out), "--json"]) == 0
    run = read_run(out)
    assert run["status"] == "done" and run["config"]["loss"] == "ipo"
    # --max-length is per (prompt + response): the response gets half, the prompt the rest
    assert (run["config"]["max_prompt_len"], run["config"]["max_response_len"]) == (17, 16)
    assert run["data_hash"] and run["summary"]["pairs"] == 4


def test_train_rs_from_prompts_ingests_into_the_store(tiny_policy, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in
                                 ["hello", "tell me a story", "write a poem"]) + "\n")
    db_path, out = tmp_path / "ws.duckdb", tmp_path / "rs"
    assert main(["train", "rs", "--prompts", str(prompts), "--reward", "keyword:zebra",
                 "--model", str(tiny_policy), "--k", "3", "--rounds", "2", "--max-steps", "2",
                 "--max-new-tokens", "6", "--db", str(db_path), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from annotate import store
    with store.Store(db_path) as db:
        assert store.get_run(db, result["run"])["status"] == "done"
        n = db.scalar("SELECT count(*) FROM scores WHERE run_id = ? AND scorer = 'reward:keyword:zebra'",
                      [result["run"]])
        assert n >= 3   # at least one distinct response per prompt in each round
        assert db.scalar("SELECT count(*) FROM metrics WHERE run_id = ? AND name = 'reward'",
                         [result["run"]]) == 2
