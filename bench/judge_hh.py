"""How well the default local judge agrees with people on HH-RLHF harmless pairs.

    flock /work/heavy.lock python bench/judge_hh.py [--n 1500] [--judge local:smollm2-135m-instruct] [--data FILE]

Loads ../shared/data/hh-harmless-1500.jsonl into a throw-away store (the human label of each
pair: the chosen response), judges every pair in both orders with ``judges.judge_store``
(exactly what ``prefstudio judge --both-orders`` runs), and prints the agreement with the
human choice:

    one order    the first order asked alone (the same forward passes a single-order run makes:
                 the shown order is a coin flip fixed by the ids, so it is not "chosen first")
    both orders  the two orders' probabilities averaged
and, side by side on the same pairs, what trivial judges score: always the first shown,
the longer response, the shorter response. Prints one JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HH = ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl"


def load_hh(db, path: Path, n: int, seed: int) -> int:
    """Import the file (or a fixed random subset of n rows) with the human choice as a label."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if n < len(lines):
        lines = random.Random(seed).sample(lines, n)
    subset = Path(tempfile.mkdtemp()) / "hh-subset.jsonl"
    subset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from annotate import formats
    formats.import_file(db, subset, fmt="hh")
    return len(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HH), help="the HH file (default ../shared/data/...)")
    ap.add_argument("--n", type=int, default=1500, help="pairs (a fixed random subset if < 1500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", default="local:smollm2-135m-instruct")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--principle", default="harmlessness")
    ap.add_argument("--out", help="keep the store and run folder here (default: a temp folder)")
    args = ap.parse_args()

    import torch
    from annotate import judges, store
    from policy.lm import load_policy

    work = Path(args.out or tempfile.mkdtemp(prefix="judge-hh-"))
    db = store.Store(work / "hh.duckdb")
    n = load_hh(db, Path(args.data), args.n, args.seed)
    spec = judges.parse_judge_spec(args.judge)
    config = judges.JudgeConfig(judge=spec.public, both_orders=True, principle=args.principle,
                                batch_size=args.batch_size)
    t0 = time.time()
    lm = load_policy(spec.target)
    judge = judges.build_judge(spec, config, lm=lm)
    load_s = time.time() - t0
    t0 = time.time()
    summary = judges.judge_store(db, judge, config, work / "run", progress=True)
    judge_s = time.time() - t0
    report = judges.agreement_report(db, config.name)["judges"][config.name]

    # Per pair, straight from the stored raw verdicts, for the baselines and the A-bias.
    human = {p["task_id"]: p["chosen_id"] for p in store.pairs(db, source="human")}
    texts = {}
    for t in store.tasks_lacking_label(db, "nobody"):
        texts[t["id"]] = {r["id"]: r["text"] for r in t["responses"]}
    first_a, longer, shorter, mass = [], [], [], []
    for label in store.ai_labels(db, config.name):
        pair = label["details"]["pairs"][0]
        first = pair["orders"][0]
        first_a.append(first["shown"][0] == human[label["task_id"]])
        t = texts[label["task_id"]]
        x, y = pair["x"], pair["y"]
        long_id = x if len(t[x]) >= len(t[y]) else y
        longer.append(long_id == human[label["task_id"]])
        shorter.append(long_id != human[label["task_id"]])
        mass += [o["info"]["option_mass"] for o in pair["orders"]]
    picks_a = [o["p_first_shown"] > 0.5 for lab in store.ai_labels(db, config.name)
               for o in lab["details"]["pairs"][0]["orders"]]
    share = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    result = {
        "pairs": n, "judged": summary["judged"], "failed": summary["failed"],
        "one_order_accuracy": report["first_order_accuracy"],
        "both_orders_accuracy": report["accuracy_argmax"],
        "both_orders_label_accuracy": report["accuracy"], "ties": report["ties"],
        "cohen_kappa": report["cohen_kappa"],
        "position_consistency": report["position_consistency"],
        "mean_p_human_choice": report["mean_p_human_choice"],
        "share_of_verdicts_for_A": share(picks_a),
        "mean_option_mass": share(mass),
        "baseline_always_first_shown": share(first_a),
        "baseline_longer": share(longer), "baseline_shorter": share(shorter),
        "comparisons": 2 * summary["judged"], "judge_seconds": round(judge_s, 1),
        "comparisons_per_second": round(2 * summary["judged"] / judge_s, 3),
        "load_seconds": round(load_s, 1), "torch_threads": torch.get_num_threads(),
    }
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(json.dumps(result))
    db.close()


if __name__ == "__main__":
    main()
