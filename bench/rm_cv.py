"""K-fold cross-validation of any ``prefstudio train rm`` option set, through the real CLI.

    python bench/rm_cv.py --data ../shared/data/hh-harmless-1500.jsonl --workdir /tmp/cv \\
        -- --base minilm                                  # the defaults, 5 folds
    python bench/rm_cv.py --workdir /tmp/cv --only-folds 0,1 --name lr1e-3 \\
        -- --base minilm --lr 1e-3 --lora-targets all-linear --train-modules pooler
    python bench/rm_cv.py --workdir /tmp/cv --seeds 0,1,2 -- --base minilm ...   # + ensemble

The file (any import format prefstudio reads; HH transcripts, pairs, rankings) is split into
``--folds`` folds BY PROMPT: rows that share a prompt land in the same fold, so no test prompt
was seen in training. Fold k is the test set of round k; the others are its training file.
For each fold (or only ``--only-folds``) it runs

    python app.py train rm --data TRAIN --out DIR <options after -->
    python app.py eval rm --model DIR --data TEST

and prints the fold's test accuracy and wall time, then the mean, the standard deviation
(over folds, ddof 1), min–max, and as its last line one JSON object. With ``--seeds 0,1,2``
every fold trains one model per seed (``--seed S`` appended) and also evaluates their
normalised, equal-weight ensemble (``{"normalize": true, "models": [...]}``, score.py); the
summary is then the ensemble's, the single models' accuracies are in the JSON.

The splits depend only on the data and ``--split-seed``, so every recipe run with the same
workdir is tested on the same folds. Finished runs in the workdir are reused (``--fresh``
retrains). Run it under ``nice`` on a shared machine: it is long and CPU-bound.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewardmodel.score import write_ensemble  # noqa: E402
DATA = next((p for p in (ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl",
                         ROOT.parent.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
             if p.exists()), ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl")


# --- splitting by prompt --------------------------------------------------------------------

def prompt_key(record: dict) -> str:
    """The prompt a row is about, as a string (rows with equal keys stay in one fold)."""
    from annotate import formats
    fmt = formats.detect_format(record)
    if fmt == "hh" or (fmt == "pairs" and record.get("prompt") is None):
        chosen, rejected = record.get("chosen"), record.get("rejected")
        split = formats.split_conversations if isinstance(chosen, list) else formats.split_transcripts
        prompt = split(chosen, rejected)[0]
    else:
        prompt = record.get("prompt")
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def split_folds(data: Path, folds: int, seed: int, out: Path) -> list[tuple[Path, Path, int, int]]:
    """Write ``fold{k}-train.jsonl`` / ``fold{k}-test.jsonl``; [(train, test, n_train, n_test)].

    Prompt groups are shuffled and dealt greedily to the currently smallest fold, so the folds
    differ in size by at most one group.
    """
    from annotate import formats
    records, _, _ = formats.read_records(data)
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        try:
            key = prompt_key(rec)
        except Exception:  # a row prefstudio will skip anyway: keep it apart
            key = f"row:{i}"
        groups.setdefault(key, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    members: list[list[int]] = [[] for _ in range(folds)]
    for group in order:
        min(members, key=len).extend(group)
    out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    result = []
    for k in range(folds):
        test = set(members[k])
        train_file, test_file = out / f"fold{k}-train.jsonl", out / f"fold{k}-test.jsonl"
        train_file.write_text("".join(lines[i] for i in range(len(lines)) if i not in test))
        test_file.write_text("".join(lines[i] for i in sorted(test)))
        result.append((train_file, test_file, len(lines) - len(test), len(test)))
    return result


# --- running the CLI ------------------------------------------------------------------------

def run_cli(args: list[str], log: Path) -> str:
    """``python app.py ARGS``; stderr goes to ``log``; returns stdout (exits on failure)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
    with open(log, "a") as err:
        done = subprocess.run([sys.executable, str(ROOT / "app.py"), *args], env=env,
                              stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    if done.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"app.py {' '.join(args)} failed ({done.returncode}); {log}:\n{tail}")
    return done.stdout


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def train_one(train_file: Path, out: Path, options: list[str], fresh: bool) -> dict:
    """Train (or reuse a finished run in ``out``); the summary plus ``wall_s``."""
    run_json = out / "run.json"
    if not fresh and (out / "rm.json").exists() and run_json.exists():
        run = json.loads(run_json.read_text())
        if run.get("status") == "done" and run.get("cv_wall_s") is not None:
            return {**run.get("summary", {}), "wall_s": run["cv_wall_s"], "reused": True}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = last_json(run_cli(["train", "rm", "--data", str(train_file), "--out", str(out),
                                 "--no-resume", "--json", *options], out.parent / f"{out.name}.log"))
    wall = time.perf_counter() - t0
    run = json.loads(run_json.read_text()) if run_json.exists() else {}
    run.update(cv_wall_s=wall, summary=summary)
    run_json.write_text(json.dumps(run, indent=2, default=str))
    return {**summary, "wall_s": wall, "reused": False}


def evaluate(model: Path, test_file: Path, log: Path, fresh: bool) -> float:
    """``eval rm`` on the test fold; the result is kept beside the log and reused while the
    model (its rm.json, or the ensemble file) is older than it."""
    cached = log.with_suffix(".json")
    source = model / "rm.json" if model.is_dir() else model
    if not fresh and cached.exists() and cached.stat().st_mtime > source.stat().st_mtime:
        return json.loads(cached.read_text())["accuracy"]
    result = last_json(run_cli(["eval", "rm", "--model", str(model), "--data", str(test_file),
                                "--plot", str(log.with_suffix(".png"))], log))
    cached.write_text(json.dumps(result))
    return result["accuracy"]


# --- the report -----------------------------------------------------------------------------

def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def slug(options: list[str]) -> str:
    text = " ".join(options) or "defaults"
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", text.replace("--", "")).strip("-")[:60]
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this script's arguments, the ``train rm`` options after ``--``)."""
    if "--" not in argv:
        return argv, []
    return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def main(argv: list[str] | None = None) -> None:
    ours, options = split_argv(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 usage="%(prog)s [options] -- [train rm options]")
    ap.add_argument("--data", type=Path, default=DATA, help="pairs / HH / rankings file")
    ap.add_argument("--workdir", type=Path, required=True, help="splits and runs go here")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", default=None, help="comma-separated fold numbers (quick screens)")
    ap.add_argument("--split-seed", type=int, default=0, help="shuffles the prompts into folds")
    ap.add_argument("--seeds", default=None, help="comma-separated: one model per seed + their ensemble")
    ap.add_argument("--name", default=None, help="the recipe's folder in the workdir (default: from the options)")
    ap.add_argument("--fresh", action="store_true", help="retrain runs already in the workdir")
    args = ap.parse_args(ours)
    if args.folds < 2:
        ap.error("--folds must be at least 2")
    if not args.data.exists():
        ap.error(f"{args.data}: no such file")
    folds = list(range(args.folds)) if args.only_folds is None else \
        [int(k) for k in args.only_folds.split(",")]
    if any(not 0 <= k < args.folds for k in folds):
        ap.error(f"--only-folds: fold numbers must be in 0..{args.folds - 1}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]

    data_id = hashlib.sha1(args.data.read_bytes()).hexdigest()[:8]
    splits = split_folds(args.data, args.folds, args.split_seed,
                         args.workdir / f"splits-{data_id}-k{args.folds}-s{args.split_seed}")
    name = args.name or slug(options)
    recipe_dir = args.workdir / "runs" / name
    print(f"recipe {name}: train rm {' '.join(options) or '(defaults)'}", flush=True)
    rows, t_all = [], time.perf_counter()
    for k in folds:
        train_file, test_file, n_train, n_test = splits[k]
        fold_dir = recipe_dir / f"fold{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        models, singles, trains = [], [], []
        for seed in seeds:
            out = fold_dir / ("model" if seed is None else f"seed{seed}")
            extra = [] if seed is None else ["--seed", str(seed)]
            trains.append(train_one(train_file, out, options + extra, args.fresh))
            singles.append(evaluate(out, test_file, fold_dir / f"eval-{out.name}.log", args.fresh))
            models.append(out)
        acc = singles[0] if len(models) == 1 else \
            evaluate(write_ensemble(fold_dir, models), test_file, fold_dir / "eval-ensemble.log",
                     args.fresh)
        wall = time.perf_counter() - t0
        row = {"fold": k, "accuracy": acc, "n_train": n_train, "n_test": n_test, "wall_s": wall,
               "train_wall_s": [t["wall_s"] for t in trains], "steps": [t.get("steps") for t in trains],
               "val_accuracy": [t.get("best_eval_accuracy") for t in trains],
               "reused": any(t["reused"] for t in trains)}
        if len(models) > 1:
            row["single_accuracy"] = singles
        rows.append(row)
        singles_txt = f"  members {' '.join(f'{a:.3f}' for a in singles)}" if len(models) > 1 else ""
        print(f"fold {k}: test accuracy {acc:.3f} on {n_test} pairs (trained on {n_train}), "
              f"steps {row['steps']}, val {row['val_accuracy']}, "
              f"training {sum(row['train_wall_s']):.0f} s, fold {wall:.0f} s"
              f"{' (reused runs)' if row['reused'] else ''}{singles_txt}", flush=True)
    accs = [r["accuracy"] for r in rows]
    s = spread(accs)
    total = time.perf_counter() - t_all
    print(f"{name}: mean {s['mean']:.3f} ± {s['std']:.3f} (std over {len(accs)} folds), "
          f"min–max {s['min']:.3f}–{s['max']:.3f}, wall {total / 60:.1f} min (training "
          f"{sum(sum(r['train_wall_s']) for r in rows) / 60:.1f} min)", flush=True)
    result = {"recipe": name, "options": options, "data": str(args.data), "folds": args.folds,
              "tested_folds": folds, "seeds": seeds if seeds != [None] else None,
              "accuracies": accs, **s, "wall_s": total, "per_fold": rows}
    if len(seeds) > 1:
        result["single_model"] = spread([a for r in rows for a in r["single_accuracy"]])
    (recipe_dir / "cv.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
