"""`prefstudio train ppo|rloo` through the real command line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from annotate.runlog import read_metrics, read_run
from app import main
from policy_helpers import tiny_prompts

ROOT = Path(__file__).resolve().parent.parent


def prompts_file(tmp_path, n=4):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p[0]["content"]}) + "\n" for p in tiny_prompts(n)))
    return path


@pytest.mark.parametrize("kind, extra", [
    ("ppo", ["--minibatch-size", "2", "--ppo-epochs", "2", "--kl-target", "3"]),
    ("rloo", ["--k", "2"]),
])
def test_train_ppo_and_rloo_from_a_prompts_file(tiny_policy, tmp_path, kind, extra):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "app.py", "train", kind, "--prompts",
                           str(prompts_file(tmp_path)), "--reward", "keyword:zebra,quokka",
                           "--model", str(tiny_policy), "--max-steps", "2", "--batch-size", "2",
                           "--max-new-tokens", "4", "--lr", "1e-2", "--beta", "0.2",
                           "--max-length", "40",
                           "--out", str(out), "--json", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    run = read_run(out)
    assert result["kind"] == kind and result["run"] == run["id"]
    assert run["status"] == "done" and run["summary"]["steps"] == 2
    assert run["config"]["beta"] == 0.2 and run["config"]["sampling"]["max_new_tokens"] == 4
    assert run["config"]["sampling"]["max_prompt_tokens"] == 40   # --max-length: prompt tokens
    if kind == "ppo":
        assert run["config"]["kl_target"] == 3.0 and run["config"]["ppo_epochs"] == 2
    else:
        assert run["config"]["k"] == 2
    assert len([m for m in read_metrics(out) if m["name"] == "reward"]) == 2
    assert (out / "policy.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "ppo", "--reward", "length", "--db", "DB"], "train ppo: no --prompts FILE"),
    (["train", "ppo", "--prompts", "PROMPTS", "--reward", "length", "--k", "4"],
     "--k is not an option of this trainer"),
    (["train", "rloo", "--prompts", "PROMPTS", "--reward", "length", "--critic", "adapter"],
     "--critic is not an option of this trainer"),
    (["train", "rloo", "--prompts", "PROMPTS", "--reward", "length", "--k", "1"], "k >= 2"),
    (["train", "rloo", "--prompts", "PROMPTS"], "exactly one of --rm DIR"),
])
def test_bad_options_exit_2_with_one_line(tiny_policy, tmp_path, capsys, argv, message):
    prompts = prompts_file(tmp_path)
    argv = [{"PROMPTS": str(prompts), "DB": str(tmp_path / "none.duckdb")}.get(a, a) for a in argv]
    code = main(argv + ["--model", str(tiny_policy), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run" / "run.json").exists()
