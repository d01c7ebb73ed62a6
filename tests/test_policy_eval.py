"""prefstudio eval policy: policy vs its reference under a reward, KL, length, samples table."""
import json

import pytest

from policy.evaluate import PolicyEvalConfig, evaluate_policy
from harness.lora import LoraSettings
from policy.lm import load_policy, save_policy
from policy.rewards import keyword_reward, length_reward
from policy_helpers import tiny_prompts
from tiny_models import MARKERS


def untrained_policy(base, folder):
    """A policy run folder whose adapter is fresh (LoRA B = 0): the policy IS the reference."""
    model, tok = load_policy(str(base), lora=LoraSettings(r=4, alpha=8), trainable=True)
    return save_policy(model, tok, folder, str(base))


def small_config(**overrides) -> PolicyEvalConfig:
    cfg = PolicyEvalConfig(batch_size=4, table_rows=3)
    cfg.sampling.max_new_tokens = 8
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_a_policy_equal_to_its_reference_ties_everywhere(tiny_policy, tmp_path):
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    prompts = tiny_prompts(6)
    result = evaluate_policy(str(folder), prompts, length_reward(), tmp_path / "eval",
                             small_config(), reward_name="length")
    # same weights, same seed per batch → the same answers on both sides
    assert result["n"] == 6
    assert result["kl"] == pytest.approx(0.0, abs=1e-5)
    assert result["win_rate"] == 0.5 and result["reward_gain"] == 0.0
    assert result["length_policy"] == result["length_reference"] > 0
    rows = [json.loads(line) for line in open(result["samples_jsonl"])]
    assert [r["policy"] for r in rows] == [r["reference"] for r in rows]
    table = open(result["samples"]).read()
    assert table.count("\n| ") == 1 + 3                       # header + table_rows answers
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["n"] == 6


def test_eval_reports_a_judge_win_rate(tiny_policy, tmp_path):
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    prefers_policy = lambda prompts, a, b: [1.0 if i % 2 else None for i in range(len(a))]
    result = evaluate_policy(str(folder), tiny_prompts(4), keyword_reward(MARKERS),
                             tmp_path / "eval", small_config(), judge=prefers_policy)
    assert result["judge_win_rate"] == 1.0 and result["judge_decided"] == 2


def test_eval_refuses_an_empty_prompt_list(tiny_policy, tmp_path):
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    with pytest.raises(ValueError, match="no prompts"):
        evaluate_policy(str(folder), [], length_reward(), tmp_path / "eval", small_config())
    assert not (tmp_path / "eval").exists()


def run_cli(*args, cwd=None):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, str(root / "app.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or root)


def write_prompts(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def test_cli_eval_policy_prints_one_json_line(tiny_policy, tmp_path):
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    prompts = write_prompts(tmp_path / "heldout.jsonl", tiny_prompts(5))
    proc = run_cli("eval", "policy", "--model", folder, "--reward", "length:4", "--prompts",
                   prompts, "--max-new-tokens", 6, "--out", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["n"] == 5 and result["reward"] == "reward:length:4"
    for key in ("reward_policy", "reward_reference", "win_rate", "kl", "length_policy",
                "length_reference"):
        assert isinstance(result[key], float)
    assert open(result["samples"]).read().startswith("# ")


@pytest.mark.parametrize("extra, message", [
    (["--prompts", "missing.jsonl", "--reward", "length"], "missing.jsonl"),
    (["--prompts", "PROMPTS", "--reward", "length", "--rm", "somewhere"], "exactly one"),
    (["--prompts", "PROMPTS", "--reward", "sparkle"], "unknown reward"),
    (["--reward", "length"], "--prompts"),
])
def test_cli_eval_policy_bad_input_is_one_line(tiny_policy, tmp_path, extra, message):
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    prompts = write_prompts(tmp_path / "heldout.jsonl", tiny_prompts(2))
    extra = [str(prompts) if a == "PROMPTS" else a for a in extra]
    proc = run_cli("eval", "policy", "--model", folder, *extra, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_cli_eval_policy_with_a_reward_model_judge(tiny_policy, tmp_path):
    from policy_helpers import shared_base_rm
    folder = untrained_policy(tiny_policy, tmp_path / "policy")
    rm = shared_base_rm(tiny_policy, tmp_path / "rm")
    prompts = write_prompts(tmp_path / "heldout.jsonl", tiny_prompts(3))
    proc = run_cli("eval", "policy", "--model", folder, "--rm", rm, "--judge", f"rm:{rm}",
                   "--prompts", prompts, "--max-new-tokens", 5, "--out", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # the policy is its reference: identical answers, so the judge cannot prefer either
    assert result["judge_decided"] == 3 and result["judge_win_rate"] == pytest.approx(0.5)
    assert result["reward"].startswith("rm:") and result["win_rate"] == 0.5
