"""bench/loop.py end to end on tiny models: gold reward → synthetic annotators through the
store's queue → proxy reward model → RS / DPO / RLOO / PPO against the proxy → scored by the
gold on held-out prompts. Slow (a few minutes): every stage is a real CLI subprocess."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import WORDS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def tiny_hh_file(path: Path, n: int = 48) -> Path:
    """HH-format dialogues whose single human turn is made of the tiny tokenizer's words."""
    import random
    rng = random.Random(0)
    plain = [w for w in WORDS if w not in ("zebra", "quokka")]
    with open(path, "w") as f:
        for _ in range(n):
            prompt = " ".join(rng.sample(plain, 4))
            f.write(json.dumps({"chosen": f"\n\nHuman: {prompt}\n\nAssistant: ok",
                                "rejected": f"\n\nHuman: {prompt}\n\nAssistant: no"}) + "\n")
    return path


def test_loop_makes_the_tiny_policy_better_under_the_gold(tmp_path, tiny_policy, tiny_bert):
    png = tmp_path / "curve.png"
    proc = subprocess.run(
        [sys.executable, "bench/loop.py", "--tiny", "--workdir", str(tmp_path / "work"),
         "--policy", str(tiny_policy), "--rm-base", str(tiny_bert),
         "--rm-args", "--lr 3e-3 --epochs 4 --batch-size 4",
         "--gold", "keyword:zebra,quokka", "--prompt-file", str(tiny_hh_file(tmp_path / "hh.jsonl")),
         "--png", str(png)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600)   # ~5 min on a quiet machine; 20+ under load
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert set(result["methods"]) == {"rs", "dpo", "rloo", "ppo"}
    for name, r in result["methods"].items():
        for key in ("gold_gain", "proxy_gain", "kl", "win_rate", "wall_s"):
            assert isinstance(r[key], float), (name, key)
        lo, hi = r["gold_gain_ci"]
        assert lo <= r["gold_gain"] <= hi
        assert r["n_prompts"] == 16
    assert max(r["gold_gain"] for r in result["methods"].values()) > 0, result["methods"]
    setup = result["setup"]
    # the annotators labelled every task twice through the queue (3 annotators, overlap 2)
    assert setup["labels"] == 2 * setup["tasks"] == 2 * (32 + 16)
    assert 0.5 < setup["annotator_agreement"] <= 1
    assert [p["step"] for p in result["curve"]] == [4, 8]
    assert png.stat().st_size > 0


def test_loop_on_the_hh_files_own_labels(tmp_path, tiny_policy, tiny_bert):
    """--labels hh: the file's pairs split by prompt into the policy's half A and the gold's
    half B, held-out prompts in neither; DPO on A's human labels, RLOO against an RM on A,
    both scored on the held-out prompts by the RM on B."""
    hh = tiny_hh_file(tmp_path / "hh.jsonl")
    proc = subprocess.run(
        [sys.executable, "bench/loop.py", "--tiny", "--labels", "hh", "--methods", "dpo,rloo",
         "--workdir", str(tmp_path / "work"), "--policy", str(tiny_policy),
         "--rm-base", str(tiny_bert), "--rm-args", "--lr 3e-3 --epochs 4 --batch-size 4",
         "--prompt-file", str(hh), "--png", str(tmp_path / "curve.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["methods"]) == {"dpo", "rloo"}
    for r in result["methods"].values():
        assert r["n_prompts"] == 16 and r["gold_gain_ci"][0] <= r["gold_gain"] <= r["gold_gain_ci"][1]
    setup = result["setup"]
    assert setup["labels_from"] == "hh" and setup["pairs_a"] == setup["pairs_b"] == 16
    work = Path(result["workdir"])
    turn = lambda line: json.loads(line)["chosen"].split("Human: ")[1].split("\n")[0]  # noqa: E731
    a, b = ({turn(l) for l in (work / f"pairs-{h}.jsonl").read_text().splitlines()} for h in "ab")
    held = {json.loads(l)["prompt"] for l in (work / "heldout-prompts.jsonl").read_text().splitlines()}
    assert len(held) == 16 and not (a & b) and not (held & (a | b))     # no prompt in two roles
    # the "ok" over "no" preference is learnt from either half and holds on the other
    assert setup["gold_accuracy_on_a"] > 0.5 and setup["proxy_accuracy_on_b"] > 0.5, setup
