"""How many labels does a reward model need? Held-out accuracy of one ``train rm`` recipe (the
defaults unless options follow ``--``) against the number of training pairs.

    python bench/rm_curve.py --workdir /tmp/cv                          # sizes 100..1,000 + all
    python bench/rm_curve.py --workdir /tmp/cv --sizes 100,500 --folds-used 0 -- --base minilm

It uses ``bench/rm_cv.py``'s folds (5 folds by prompt over the shared 1,500 HH pairs: no test
prompt is ever trained on). For each fold in ``--folds-used`` and each size n, it draws n rows
of the fold's training file (a fixed shuffle per fold, so the 250-pair set holds the 100-pair
set), trains with the real CLI (``python app.py train rm --data SUBSET --out DIR``), and tests on
the fold's 300 held-out pairs. The size ``all`` is the whole training fold (1,200 pairs): the
run is shared with ``rm_cv.py --name NAME`` in the same workdir, so a finished cross-validation
is reused. Several folds give the spread (each fold is a different draw of labels and a
different test set). Prints a table, writes ``--plot`` (PNG) and, as its last line, one JSON
object. Like rm_cv.py it is long and CPU-bound: run it under ``nice`` on a shared machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rm_cv  # noqa: E402  (the folds, the CLI runs and their caching)

ROOT = rm_cv.ROOT
SIZES = "100,250,500,1000,all"


def subset(train_file: Path, n: int | None, seed: int, out: Path) -> Path:
    """The first ``n`` rows of a fixed shuffle of ``train_file`` (None: every row)."""
    rows = train_file.read_text().splitlines(keepends=True)
    if n is None or n >= len(rows):
        return train_file
    random.Random(seed).shuffle(rows)
    out.write_text("".join(rows[:n]))
    return out


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    xs = [p["n_train"] for p in points]
    ax.errorbar(xs, [p["mean"] for p in points], yerr=[p["std"] for p in points], marker="o",
                capsize=3, label="held-out accuracy (mean ± std over folds)")
    for p in points:
        ax.scatter([p["n_train"]] * len(p["accuracies"]), p["accuracies"], s=8, color="grey", zorder=3)
    ax.axhline(0.5, color="red", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("labelled pairs given to `train rm`")
    ax.set_ylabel("accuracy on 300 held-out pairs")
    import textwrap
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)   # long option lists wrap
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    ours, options = rm_cv.split_argv(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 usage="%(prog)s [options] -- [train rm options]")
    ap.add_argument("--data", type=Path, default=rm_cv.DATA, help="pairs / HH / rankings file")
    ap.add_argument("--workdir", type=Path, required=True, help="splits and runs (shared with rm_cv.py)")
    ap.add_argument("--sizes", default=SIZES, help=f"comma-separated pair counts, 'all' = the whole training fold ({SIZES})")
    ap.add_argument("--folds-used", default="0,1,2", help="which of the 5 folds give the spread")
    ap.add_argument("--name", default=None, help="the recipe's folder (rm_cv.py --name; default: from the options)")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "rm-curve.png")
    args = ap.parse_args(ours)
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    folds = [int(k) for k in args.folds_used.split(",")]

    data_id = hashlib.sha1(args.data.read_bytes()).hexdigest()[:8]
    splits = rm_cv.split_folds(args.data, 5, 0, args.workdir / f"splits-{data_id}-k5-s0")
    name = args.name or rm_cv.slug(options)
    recipe_dir = args.workdir / "runs" / name
    print(f"recipe {name}: train rm {' '.join(options) or '(defaults)'}; folds {folds}", flush=True)
    points = []
    for n in sizes:
        accs, walls, n_train = [], [], 0
        for k in folds:
            train_file, test_file, n_all, _ = splits[k]
            fold_dir = recipe_dir / f"fold{k}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            label = "model" if n is None else f"n{n}"   # 'all' is rm_cv.py's own run
            data = subset(train_file, n, seed=k, out=fold_dir / f"train-n{n}.jsonl")
            trained = rm_cv.train_one(data, fold_dir / label, options, fresh=False)
            acc = rm_cv.evaluate(fold_dir / label, test_file, fold_dir / f"eval-{label}.log", False)
            n_train = n_all if n is None else min(n, n_all)
            accs.append(acc)
            walls.append(trained["wall_s"])
            print(f"n={n_train} fold {k}: accuracy {acc:.3f}, training {trained['wall_s']:.0f} s"
                  f"{' (reused)' if trained['reused'] else ''}", flush=True)
        point = {"n_train": n_train, "accuracies": accs, "mean": statistics.fmean(accs),
                 "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                 "train_wall_s_median": statistics.median(walls)}
        points.append(point)
    print("\n| pairs | held-out accuracy, mean ± std | per fold | training time (median) |")
    print("|---|---|---|---|")
    for p in points:
        print(f"| {p['n_train']} | {p['mean']:.3f} ± {p['std']:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in p['accuracies'])} | {p['train_wall_s_median']:.0f} s |")
    plot(points, args.plot, f"train rm {' '.join(options) or '(defaults)'} on HH harmless, folds {folds}")
    print(json.dumps({"recipe": name, "options": options, "folds": folds, "points": points,
                      "plot": str(args.plot), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
