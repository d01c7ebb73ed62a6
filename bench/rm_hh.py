"""Reward-model quality on HH-RLHF harmless: the best CPU recipe, end to end through the CLI.

    python bench/rm_hh.py --workdir /tmp/rm-hh                     # ~45 min on 2 cores
    python bench/rm_hh.py --workdir /tmp/rm-hh --smollm2-seeds     # MiniLM only, ~6 min

Splits ../shared/data/hh-harmless-1500.jsonl into its first 1,200 lines (training; each run
keeps 10 % of those prompts aside for validation) and its last 300 (test, never seen), then:

1. ``prefstudio train rm`` on MiniLM (LoRA on every linear layer + the BERT pooler, lr 1e-3,
   batch 16, 40 steps) once per ``--minilm-seeds``;
2. ``prefstudio train rm`` on SmolLM2-135M-Instruct (LoRA on every linear layer, lr 3e-4,
   batch 16, 40 steps, gradient checkpointing) once per ``--smollm2-seeds``;
3. ``prefstudio eval rm`` on the test lines for every model, for the MiniLM models together,
   and for all of them together: an ensemble with ``"normalize": true`` and equal weights, so
   each model's reward counts in units of its own spread (score.py).

Prints one table (test accuracy, training seconds) and writes ``results.json`` in the workdir.
Runs already in the workdir are reused (delete the folder to start over).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = next((p for p in (ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl",
                         ROOT.parent.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
             if p.exists()), ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
TRAIN_LINES = 1200

COMMON = ["--max-length", "256", "--batch-size", "16", "--lora-targets", "all-linear",
          "--max-steps", "40"]
RECIPES = {  # backbone -> its own options (beside COMMON)
    "minilm": ["--base", "minilm", "--lr", "1e-3", "--train-modules", "pooler"],
    "smollm2": ["--base", "smollm2-135m-instruct", "--lr", "3e-4", "--gradient-checkpointing"],
}


def prefstudio(*args: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"prefstudio {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def accuracy(model: Path, test: Path) -> float:
    out = prefstudio("eval", "rm", "--model", str(model), "--data", str(test))
    return json.loads(out.strip().splitlines()[-1])["accuracy"]


def train(work: Path, backbone: str, seed: int, train_file: Path) -> tuple[Path, float | None]:
    out = work / f"{backbone}-{seed}"
    if (out / "rm.json").exists() and json.loads((out / "run.json").read_text())["status"] == "done":
        return out, None  # reused
    t0 = time.perf_counter()
    prefstudio("train", "rm", "--data", str(train_file), *COMMON, *RECIPES[backbone],
               "--seed", str(seed), "--out", str(out), "--no-resume")
    return out, time.perf_counter() - t0


def ensemble(work: Path, name: str, members: list[Path]) -> Path:
    config = work / f"{name}.json"
    config.write_text(json.dumps({"normalize": True,
                                  "models": [{"path": m.name, "weight": 1.0} for m in members]},
                                 indent=2))
    return config


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--minilm-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--smollm2-seeds", type=int, nargs="*", default=[0])
    args = ap.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data}: not found (the shared HH data beside the checkout)")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    lines = args.data.read_text().splitlines(keepends=True)
    train_file, test_file = work / "hh-train.jsonl", work / "hh-test.jsonl"
    train_file.write_text("".join(lines[:TRAIN_LINES]))
    test_file.write_text("".join(lines[TRAIN_LINES:]))

    rows, models = [], {"minilm": [], "smollm2": []}
    for backbone, seeds in (("minilm", args.minilm_seeds), ("smollm2", args.smollm2_seeds)):
        for seed in seeds:
            out, seconds = train(work, backbone, seed, train_file)
            models[backbone].append(out)
            rows.append({"model": out.name, "accuracy": accuracy(out, test_file), "train_s": seconds})
            print(f"{out.name:<24} {rows[-1]['accuracy']:.3f}  trained in "
                  f"{'(reused)' if seconds is None else f'{seconds:.0f} s'}", flush=True)
    groups = {"minilm-ensemble": models["minilm"],
              "all-ensemble": models["minilm"] + models["smollm2"]}
    for name, members in groups.items():
        if len(members) > 1 and (name == "minilm-ensemble" or models["smollm2"]):
            rows.append({"model": name, "accuracy": accuracy(ensemble(work, name, members), test_file),
                         "train_s": None, "members": [m.name for m in members]})
            print(f"{name:<24} {rows[-1]['accuracy']:.3f}", flush=True)

    print(f"\ntest: {len(lines) - TRAIN_LINES} pairs (lines {TRAIN_LINES + 1}-{len(lines)})")
    print(f"{'model':<24} {'test accuracy':>13} {'train s':>8}")
    for r in rows:
        secs = f"{r['train_s']:.0f}" if r["train_s"] is not None else "-"
        print(f"{r['model']:<24} {r['accuracy']:>13.3f} {secs:>8}")
    (work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
