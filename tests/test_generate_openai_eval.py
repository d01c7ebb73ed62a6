"""``eval policy --model openai:URL#MODEL``: a served policy scored like a local one, against a
served or a local reference, KL reported as null with the reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chat_server import ChatServer, completion
from policy.evaluate import KL_SERVED, PolicyEvalConfig, evaluate_policy
from policy.rewards import keyword_reward

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-0a1b2c3d4e5f60718293"
PROMPTS = [[{"role": "user", "content": f"Name an animal ({i})."}] for i in range(4)]


def brain(r):
    """The served "good" model says zebra twice; "base" never does."""
    good = r.body["model"] == "good"
    return completion(["a zebra, a zebra" if good else "a cat"] * r.body.get("n", 1))


def config() -> PolicyEvalConfig:
    cfg = PolicyEvalConfig(batch_size=2, table_rows=2)
    cfg.sampling.max_new_tokens = 8
    return cfg


def test_a_served_policy_against_a_served_reference(tmp_path):
    with ChatServer(brain) as server:
        result = evaluate_policy(server.spec("good"), PROMPTS, keyword_reward(["zebra"]),
                                 tmp_path / "eval", config(), reference_model=server.spec("base"))
        sent = [(r.body["model"], r.body["temperature"], r.body["seed"], r.body["max_tokens"])
                for r in server.requests]
    # one request per prompt and side, with the same sampling settings and seed on both sides
    assert sorted(sent) == sorted([("good", 1.0, 0, 8)] * 4 + [("base", 1.0, 0, 8)] * 4)
    assert result["reward_policy"] == 2.0 and result["reward_reference"] == 0.0
    assert result["win_rate"] == 1.0
    assert result["kl"] is None and result["kl_note"] == KL_SERVED
    assert result["model"] == server.spec("good") and result["reference"] == server.spec("base")
    samples = [json.loads(x) for x in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [s["policy"] for s in samples] == ["a zebra, a zebra"] * 4
    assert "KL n/a" in (tmp_path / "eval" / "samples.md").read_text()


def run_eval(*args, env=None):
    return subprocess.run([sys.executable, "app.py", "eval", "policy", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_cli_scores_a_served_policy_against_a_local_reference(tiny_lm, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    with ChatServer(brain) as server:
        base = ["--model", server.spec("good"), "--reward", "keyword:zebra", "--prompts", prompts,
                "--max-new-tokens", 6, "--out", tmp_path / "eval", "--db", tmp_path / "w.duckdb"]
        done = run_eval(*base, "--reference", tiny_lm, "--api-key-env", "EVAL_KEY",
                        env={"EVAL_KEY": KEY})
        assert done.returncode == 0, done.stderr
        assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
        missing = run_eval(*base)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["reward_policy"] == 2.0 and result["kl"] is None
    assert result["reference"] == str(tiny_lm) and result["n"] == 4
    for path in (tmp_path / "eval").iterdir():
        assert KEY not in path.read_text(), path
    assert missing.returncode == 2 and "needs --reference" in missing.stderr
    assert missing.stderr.count("\n") == 1
