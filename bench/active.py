"""Does active selection of the next tasks pay? Held-out accuracy against the number of labels.

    nice -n 10 python bench/active.py --workdir /tmp/active --seeds 0 1 2 --rounds 4 \
        --plot docs/img/active.png

Simulated annotators on ../shared/data/hh-harmless-1500.jsonl: the last ``--test`` lines are
the held-out test (never labelled); the rest is the pool, whose own HH label is revealed
when a pair is asked for. Each seed starts from ``--start`` random labels and one reward
model trained on them; then, for every order, ``--rounds`` rounds of ``--batch`` labels
chosen by that order from the unlabelled pool (``rewardmodel.active.rank``, the same code
``prefstudio queue-order`` runs for the studio), each round retraining the reward model from
scratch on every label so far with ``prefstudio train rm`` (a subprocess, ``--rm-options``:
by default the studio's default reward-model base, MiniLM, and ``train rm``'s own defaults)
and measuring its accuracy on the test pairs. ``random`` is the baseline: the default
queue's order is a hash, i.e. random with respect to content.

Writes ``results.json`` (every measurement; reused: a second run only does what is missing),
prints a table per order and the labels each order needs to reach random's final accuracy,
and plots the curves (``--plot``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from annotate.formats.fields import split_transcripts  # noqa: E402
from rewardmodel import active  # noqa: E402

DATA = next((p for p in (ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl",
                         ROOT.parent.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
             if p.exists()), ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
ORDERS = ("random", "uncertainty", "diverse", "mix")
RM_OPTIONS = "--base minilm"


def read_pairs(path: Path) -> list[dict]:
    """Every usable line: its text (to write a training file), prompt and both responses."""
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        try:
            prompt, chosen, rejected = split_transcripts(rec["chosen"], rec["rejected"])
        except Exception:  # noqa: BLE001  (the importer skips the same lines)
            continue
        if chosen != rejected:
            out.append({"line": line, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def train(work: Path, name: str, pairs: list[dict], seed: int, options: str) -> tuple[Path, float]:
    out = work / name
    if (out / "rm.json").exists():
        return out, 0.0
    data = work / f"{name}.jsonl"
    data.write_text("".join(p["line"] + "\n" for p in pairs))
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "train", "rm", "--data", str(data),
                           "--out", str(out), "--seed", str(seed), "--no-resume",
                           *shlex.split(options)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train rm for {name} failed:\n{done.stderr[-2000:]}")
    return out, time.perf_counter() - t0


def rewards(model: Path, pairs: list[dict]) -> list[tuple[float, float]]:
    from rewardmodel.score import load_scorer

    scorer = load_scorer(model)
    r = scorer.score([p["prompt"] for p in pairs] * 2,
                     [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]).tolist()
    del scorer
    gc.collect()
    return list(zip(r[:len(pairs)], r[len(pairs):]))


def accuracy(model: Path, test: list[dict]) -> float:
    return sum(c > r for c, r in rewards(model, test)) / len(test)


def choose(order: str, model: Path, pool: list[dict], unlabelled: list[int], n: int,
           embeddings, k: int, seed: int, rnd: int) -> list[int]:
    if order == "random":
        return random.Random(f"{seed}-{rnd}").sample(unlabelled, n)
    tasks = [active.Task(str(i), pool[i]["prompt"], {"a": pool[i]["chosen"], "b": pool[i]["rejected"]})
             for i in unlabelled]
    if order in active.NEEDS_RM:
        for t, (ra, rb) in zip(tasks, rewards(model, [pool[i] for i in unlabelled])):
            t.rewards = {"a": [ra], "b": [rb]}
    clusters = (active.cluster(embeddings[unlabelled], k, seed)
                if order in ("diverse", "mix") else None)
    return [int(t) for t in active.rank(order, tasks, clusters, seed=seed)[:n]]


def step(order, rnd, seed, args, work, pool, test, state, embeddings, results) -> None:
    """One round of one order: choose ``--batch`` labels, retrain, measure (or reuse)."""
    labelled, model = state[order]
    key = f"{seed}/{order}/{args.start + rnd * args.batch}"
    if key not in results:
        chosen = set(labelled)
        unlabelled = [i for i in range(len(pool)) if i not in chosen]
        if args.candidates and len(unlabelled) > args.candidates:   # a random slice of the pool
            unlabelled = sorted(random.Random(f"{seed}-{order}-{rnd}").sample(unlabelled,
                                                                            args.candidates))
        t0 = time.perf_counter()
        picked = choose(order, model, pool, unlabelled, args.batch, embeddings, args.clusters,
                        seed, rnd)
        pick_s = time.perf_counter() - t0
        new_model, train_s = train(work, f"s{seed}-{order}-{rnd}",
                                   [pool[i] for i in labelled + picked], seed, args.rm_options)
        acc = accuracy(new_model, test)
        results[key] = {"seed": seed, "order": order, "labels": len(labelled) + len(picked),
                        "accuracy": acc, "picked": picked, "pick_s": pick_s, "train_s": train_s}
        save(work, results)
        print(f"seed {seed} {order:<12} {len(labelled) + len(picked):>5} labels  accuracy "
              f"{acc:.3f}  (pick {pick_s:.0f} s, train {train_s:.0f} s)", flush=True)
    state[order] = (labelled + results[key]["picked"], work / f"s{seed}-{order}-{rnd}")


def save(work: Path, results: dict) -> None:
    (work / "results.json").write_text(json.dumps(results, indent=1))


def curves(results: dict, orders) -> dict[str, dict[int, list[float]]]:
    """Accuracy per seed, per order and number of labels (the start counts for every order)."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in sorted(results.values(), key=lambda r: r["seed"]):
        for order in (orders if r["order"] == "start" else (r["order"],)):
            out.setdefault(order, {}).setdefault(r["labels"], []).append(r["accuracy"])
    return {o: dict(sorted(c.items())) for o, c in out.items()}


def labels_to_reach(curve: dict[int, float], target: float) -> int | None:
    return next((n for n, acc in curve.items() if acc >= target), None)


def report(results: dict, orders, plot: Path | None) -> None:
    """Mean ± standard deviation over seeds per point; the labels each order needs (mean
    curve) to reach random's final mean accuracy; each order's mean difference to random at
    the same labels and seed (paired), with its spread over seeds."""
    import statistics as st
    runs = curves(results, orders)
    mean = {o: {n: st.mean(v) for n, v in c.items()} for o, c in runs.items()}
    sd = {o: {n: st.stdev(v) if len(v) > 1 else 0.0 for n, v in c.items()} for o, c in runs.items()}
    sizes = sorted({n for c in mean.values() for n in c})
    seeds = sorted({r["seed"] for r in results.values()})
    print(f"\nheld-out accuracy, mean ± sd over seeds {seeds}")
    print(f"{'order':<12}" + "".join(f"{n:>15}" for n in sizes) + "   labels to reach random's final")
    target = mean.get("random", {}).get(max(mean.get("random", {0: 0})), None)
    for order in orders:
        c = mean.get(order, {})
        reach = labels_to_reach(c, target) if target is not None else None
        print(f"{order:<12}" + "".join(f"{c[n]:>8.3f} ± {sd[order][n]:.3f}" if n in c else f"{'-':>15}"
                                       for n in sizes)
              + f"   {reach if reach is not None else 'not reached'}")
    by_seed = {(r["seed"], r["order"], r["labels"]): r["accuracy"] for r in results.values()}
    for order in orders:
        if order == "random":
            continue
        diffs = [acc - by_seed[(seed, "random", n)] for (seed, o, n), acc in by_seed.items()
                 if o == order and (seed, "random", n) in by_seed]
        if diffs:
            print(f"{order} - random, paired over {len(diffs)} (seed, labels) points: mean "
                  f"{st.mean(diffs):+.3f}, sd {st.stdev(diffs) if len(diffs) > 1 else 0:.3f}, "
                  f"{sum(d > 0 for d in diffs)} above, {sum(d < 0 for d in diffs)} below")
    if plot is None:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, order in enumerate(orders):
        c = mean.get(order, {})
        shift = (i - (len(orders) - 1) / 2) * 4       # side by side, not on top of each other
        ax.errorbar([n + shift for n in c], list(c.values()), yerr=[sd[order][n] for n in c],
                    marker="o", capsize=3, label=order)
    ax.set(xlabel="labels", ylabel="held-out accuracy (300 pairs)",
           title=f"Active selection on HH harmless: mean ± sd over seeds {', '.join(map(str, seeds))}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    print(f"plot: {plot}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--start", type=int, default=100, help="random labels to start from")
    ap.add_argument("--batch", type=int, default=100, help="labels per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--test", type=int, default=300, help="last lines held out for testing")
    ap.add_argument("--candidates", type=int, default=0,
                    help="score a random slice of this many unlabelled pairs per round (0: all)")
    ap.add_argument("--clusters", type=int, default=active.DEFAULT_CLUSTERS)
    ap.add_argument("--rm-options", default=RM_OPTIONS,
                    help=f"options for `prefstudio train rm` (default {RM_OPTIONS!r})")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    args = ap.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data}: not found (the shared HH data beside the checkout)")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    pairs = read_pairs(args.data)
    pool, test = pairs[:-args.test], pairs[-args.test:]
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    embeddings = None
    if {"diverse", "mix"} & set(args.orders):
        cache = work / "embeddings.npy"
        import numpy as np
        if not cache.exists():
            np.save(cache, active.embed_prompts([p["prompt"] for p in pool]))
        embeddings = np.load(cache)
    print(f"pool {len(pool)} pairs, test {len(test)}; train rm {args.rm_options}", flush=True)
    for seed in args.seeds:
        start = random.Random(seed).sample(range(len(pool)), args.start)
        key = f"{seed}/start/{args.start}"
        if key not in results:
            model, train_s = train(work, f"s{seed}-start", [pool[i] for i in start], seed,
                                   args.rm_options)
            results[key] = {"seed": seed, "order": "start", "labels": args.start,
                            "accuracy": accuracy(model, test), "picked": start, "train_s": train_s}
            save(work, results)
            print(f"seed {seed} start {args.start} labels accuracy {results[key]['accuracy']:.3f}",
                  flush=True)
        state = {order: (list(start), work / f"s{seed}-start") for order in args.orders}
        for rnd in range(1, args.rounds + 1):      # round by round: a cut-short run compares
            for order in args.orders:
                step(order, rnd, seed, args, work, pool, test, state, embeddings, results)
    report(results, args.orders, args.plot)


if __name__ == "__main__":
    main()
