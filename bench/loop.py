"""Proof that the loop makes a policy better: the synthetic setup of Gao et al. (2022, "Scaling
laws for reward model overoptimization").

    nice -n 10 python bench/loop.py --quick [--workdir /tmp/loop] [--methods rs,dpo,rloo,ppo]

1. gold     a fixed reward the loop never trains on: by default a reward model trained on all
            1,500 shared HH pairs with the default ``train rm`` command (trained once, cached in
            the workdir); or ``--gold rm:DIR | DIR | RUN_ID | ensemble.json | length:20 | ...``
2. prompts  single-turn HH prompts: ``--prompts N`` for training, ``--heldout M`` imported as
            held out (never trained on; `eval policy` measures on them)
3. generate K candidates per prompt from the reference policy into the store (ranking tasks)
4. label    synthetic annotators rank every task through the studio's queue (``next_task``,
            ``submit_label``) with Bradley-Terry noise on the gold score (bench/loop_parts.py)
5. proxy    ``train rm --db`` on their labels with the default command; its accuracy under the
            gold's preferences on the held-out prompts' candidates (``eval rm``)
6. methods  each row of METHODS trains the reference against the proxy (CLI lines), then
            ``eval policy`` scores it on the held-out prompts by the gold; the same answers
            are scored by the proxy here. RLOO is evaluated at several steps (resuming its run
            with a larger ``--max-steps``): the over-optimisation curve, docs/img/loop-overopt.png

``--labels hh`` (issue 14's "HH policy, honestly"): no synthetic annotators and no gold of
the whole file. The HH pairs are split by prompt into halves A and B (leaving out every pair
whose dialogue starts with a held-out prompt); A's people's labels are imported into the store
and train the policy's reward model (the proxy) and DPO (``train dpo --source human``); the
gold is a reward model trained on B only; RS, RLOO and PPO train on A's single-turn prompts.
Both reward models' accuracies on the other half's human labels are reported.

    nice -n 10 python bench/loop.py --quick --labels hh --methods dpo,rloo

Prints a table, then one JSON line: ``{"methods": {name: {gold_gain, gold_gain_ci, proxy_gain,
proxy_gain_ci, kl, win_rate, wall_s, ...}}, "setup": {...}, "curve": [...]}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))   # after ROOT: bench/policy.py must not shadow policy/
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import loop_parts as parts  # noqa: E402  (after the sys.path lines)

# ../shared/data beside the checkout (from a worktree such as /work/wt/x it is two levels up)
HH = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
          ROOT.parent / "shared" / "data") / "hh-harmless-1500.jsonl"
PNG = ROOT / "docs" / "img" / "loop-overopt.png"
ANNOTATORS = ["ann-ada", "ann-bo", "ann-cy"]

# One row per method: the CLI lines that train it from the reference policy against the proxy.
# Every `train` line also gets --model {policy} --out {out} --seed {seed} --db {db}; `judge`
# lines get --db {db}. Placeholders come from MODES (and {proxy}, {k}, {tokens}). The last
# line's --max-steps is what CURVE methods vary (the run is resumed with a larger value).
METHODS = {
    # best of K by the proxy, then fine-tune on the winners (Dong et al. 2023, RAFT)
    "rs": ["train rs --rm {proxy} --k {k} --rounds 1 --select best --max-new-tokens {tokens}"
           " --temperature 1.0 --lr {sft_lr} --batch-size 8 --max-steps {rs_steps}"],
    # the proxy labels the candidates (an AI judge), DPO trains on its preferences
    "dpo": ["judge --judge rm:{proxy} --name proxy-rm --tie-threshold 0",
            "train dpo --source ai --lr {dpo_lr} --beta {dpo_beta} --batch-size 8"
            " --max-length 320 --max-steps {dpo_steps}"],
    "rloo": ["train rloo --rm {proxy} --k {k} --max-new-tokens {tokens} --lr {rl_lr}"
             " --beta {rl_beta} --batch-size {rl_batch} --save-every 0 --max-steps {rloo_steps}"],
    "ppo": ["train ppo --rm {proxy} --max-new-tokens {tokens} --lr {ppo_lr} --beta {rl_beta}"
            " --batch-size {ppo_batch} --minibatch-size {ppo_minibatch} --ppo-epochs 2"
            " --save-every 0 --max-steps {ppo_steps}"],
    # the seeds' other methods (issue 19), opt-in: --methods rs,dpo,rloo,ppo,rrhf,rest,cai
    # RRHF: the store's labelled candidates re-ordered by the proxy (Yuan et al. 2023)
    "rrhf": ["train rrhf --rm {proxy} --lr {dpo_lr} --batch-size 4 --max-length 320"
             " --save-every 0 --max-steps {dpo_steps}"],
    # ReST: one Grow, three Improve steps at rising reward quantiles (Gulcehre et al. 2023)
    "rest": ["train rs --rm {proxy} --k {k} --rounds 1 --thresholds 0.5,0.7,0.9"
             " --max-new-tokens {tokens} --temperature 1.0 --lr {sft_lr} --batch-size 8"
             " --max-steps {rs_steps}"],
    # SL-CAI: critique and revise under the principles, fine-tune on the revisions; no proxy
    # (Bai et al. 2022) — the gold measures whether the revisions are what it prefers
    "cai": ["train cai --revisions 1 --max-new-tokens {tokens} --lr {sft_lr} --batch-size 4"
            " --max-steps {rs_steps}"],
}
# --labels hh: DPO on the people's own pairs of half A (no judge)
HH_DPO = ["train dpo --source human --lr {dpo_lr} --beta {dpo_beta} --batch-size 8"
          " --max-length 320 --max-steps {dpo_steps}"]
PROMPTED = {"rs", "rloo", "ppo", "cai"}   # `train` kinds that take --prompts (rest is `train rs`)
DEFAULT_METHODS = ("rs", "dpo", "rloo", "ppo")   # issue 14's four; --quick is timed on them
CURVE = {"rloo": "rloo_curve"}     # method → the MODES key listing the steps it is scored at

MODES = {
    "full": dict(prompts=512, heldout=200, tokens=48, sft_lr=3e-4, rs_steps=64, dpo_lr=2e-4,
                 dpo_beta=0.1, dpo_steps=96, rl_lr=3e-4, rl_beta=0.05, rl_batch=4,
                 rloo_steps=64, rloo_curve=[8, 16, 32, 48, 64], ppo_lr=1e-4, ppo_batch=8,
                 ppo_minibatch=4, ppo_steps=32),
    # ≤ 20 minutes on the 2-core CPU with the gold kept from an earlier run (BENCHMARKS.md)
    "quick": dict(prompts=64, heldout=48, tokens=32, sft_lr=3e-4, rs_steps=16, dpo_lr=2e-4,
                  dpo_beta=0.1, dpo_steps=24, rl_lr=3e-4, rl_beta=0.05, rl_batch=4,
                  rloo_steps=12, rloo_curve=[6, 12], ppo_lr=3e-4, ppo_batch=8,
                  ppo_minibatch=4, ppo_steps=10),
    # the slow test's setting: tiny models, seconds per stage
    "tiny": dict(prompts=32, heldout=16, tokens=12, sft_lr=3e-3, rs_steps=8, dpo_lr=3e-3,
                 dpo_beta=0.1, dpo_steps=8, rl_lr=3e-3, rl_beta=0.01, rl_batch=4,
                 rloo_steps=8, rloo_curve=[4, 8], ppo_lr=3e-3, ppo_batch=4,
                 ppo_minibatch=2, ppo_steps=6),
}


STAGE_SECONDS: list[tuple[str, float]] = []   # (command, wall seconds) of every CLI call


def cli(*args: str, log: Path) -> dict | None:
    """Run ``python app.py ARGS --json`` (the real CLI); its JSON line, or exit on failure.
    Each call's wall time goes into cli.log and STAGE_SECONDS (where --quick's time goes)."""
    cmd = [sys.executable, "app.py", *args, "--json"]
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + shlex.join(cmd[1:]) + "\n")
        f.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True)
        seconds = time.perf_counter() - start
        STAGE_SECONDS.append((" ".join(args[:2]), round(seconds, 1)))
        f.write(proc.stdout + f"# {seconds:.1f} s\n")
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"failed (exit {proc.returncode}): {shlex.join(cmd[1:])}; log {log}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def reward_option(spec: str) -> list[str]:
    """``--gold`` as a reward option of `eval policy`: programmatic names → --reward, the rest
    (rm:DIR, a folder, a run id, an ensemble file) → --rm."""
    from policy.rewards import PROGRAMMATIC
    if spec.partition(":")[0] in {name.partition(":")[0] for name in PROGRAMMATIC}:
        return ["--reward", spec]
    return ["--rm", spec.removeprefix("rm:")]


def load_reward_spec(option: list[str], db: Path):
    from cli.common import resolve_run
    from policy.rewards import load_reward
    if option[0] == "--reward":
        return load_reward(reward=option[1])[0]
    return load_reward(rm=resolve_run(option[1], str(db)))[0]


def rm_options(args) -> list[str]:
    return (["--base", args.rm_base] if args.rm_base else []) + shlex.split(args.rm_args)


def gold_reward(args, log: Path) -> list[str]:
    """The gold's `eval policy` option; the default gold is trained once and kept."""
    if args.gold:
        return reward_option(args.gold)
    folder = Path(args.gold_dir) if args.gold_dir else Path(args.workdir) / "gold-rm"
    if not (folder / "run.json").exists() or json.loads(
            (folder / "run.json").read_text()).get("status") != "done":
        print(f"training the gold reward model on {args.gold_data} (once; kept in {folder})")
        cli("train", "rm", "--data", args.gold_data, "--out", str(folder), *rm_options(args),
            log=log)
    return ["--rm", str(folder)]


def evaluate(args, ctx: dict, name: str, run_dir: Path, proxy_fn) -> dict:
    """`eval policy` by the gold on the held-out prompts, plus the proxy on the same answers."""
    out = ctx["work"] / "evals" / name
    res = cli("eval", "policy", "--model", str(run_dir), *ctx["gold"], "--db", ctx["db"],
              "--max-new-tokens", str(ctx["mode"]["tokens"]), "--temperature", "1.0",
              "--seed", str(args.seed + 1000), "--out", str(out), log=ctx["log"])
    g = parts.gains(out / "samples.jsonl", proxy_fn, args.seed)
    return {**g, "kl": res["kl"], "win_rate": res["win_rate"],
            "length_policy": res["length_policy"], "length_reference": res["length_reference"]}


def run_method(args, ctx: dict, name: str, proxy_fn) -> tuple[dict, list]:
    values = {**ctx["mode"], "proxy": ctx["proxy"], "k": args.k}
    out = ctx["work"] / "runs" / name
    rows = HH_DPO if name == "dpo" and args.labels == "hh" else METHODS[name]
    lines = [line.format(**values) for line in rows]
    steps = ctx["mode"][CURVE[name]] if name in CURVE else [None]
    start, curve, result = time.perf_counter(), [], None
    for i, line in enumerate(lines):
        argv = shlex.split(line)
        if argv[0] == "judge":
            cli(*argv, "--db", ctx["db"], log=ctx["log"])
            continue
        train = [*argv, "--model", args.policy, "--out", str(out), "--seed", str(args.seed),
                 "--db", ctx["db"]]
        if ctx.get("train_prompts") and argv[1] in PROMPTED:
            train += ["--prompts", ctx["train_prompts"]]
        for at in (steps if i == len(lines) - 1 else [None]):
            if at is not None:
                train[train.index("--max-steps") + 1] = str(at)
            cli(*train, log=ctx["log"])
            if i < len(lines) - 1:
                continue
            pause = time.perf_counter()
            result = evaluate(args, ctx, f"{name}-{at}" if at else name, out, proxy_fn)
            start += 0 if at == steps[-1] or at is None else time.perf_counter() - pause
            if at is not None:
                curve.append({"step": at, **result})
    result["wall_s"] = time.perf_counter() - start    # train + final eval (curve evals excluded)
    return result, curve


SETUP_FILES = ("studio.duckdb", "proxy-rm", "heldout-gold-pairs.jsonl", "train-prompts.jsonl",
               "heldout-prompts.jsonl", "all-prompts.jsonl", "setup.json")


def build_setup(args, ctx: dict) -> dict:
    """Prompts, candidates, the annotators' labels through the queue, the proxy and its accuracy
    under the gold; written to WORK/setup.json so ``--setup-from`` can run more methods on it."""
    work, log, mode = ctx["work"], ctx["log"], ctx["mode"]
    train_p, held_p = parts.split_prompts(parts.hh_prompts(Path(args.prompt_file)),
                                          mode["prompts"], mode["heldout"], args.seed)
    train_f = parts.write_prompts(work / "train-prompts.jsonl", train_p)
    held_f = parts.write_prompts(work / "heldout-prompts.jsonl", held_p, held_out=True)
    cli("import", str(held_f), "--format", "prompts", "--held-out", "--db", ctx["db"], log=log)
    # candidates for both sets: the held-out ones measure the proxy under the gold (their
    # labels never train anything)
    both = work / "all-prompts.jsonl"
    both.write_text(train_f.read_text() + held_f.read_text())
    cli("generate", "--model", args.policy, "--prompts", str(both), "--k", str(args.k),
        "--max-new-tokens", str(mode["tokens"]), "--seed", str(args.seed), "--db", ctx["db"],
        log=log)
    gold_fn = load_reward_spec(ctx["gold"], Path(ctx["db"]))
    labels = parts.label_as_annotators(Path(ctx["db"]), gold_fn, ANNOTATORS, overlap=2,
                                       target=args.agreement, seed=args.seed)
    print(f"annotators: τ = {labels['tau']:.4g}, agreement {labels['annotator_agreement']:.3f} "
          f"(expected {labels['expected_agreement']:.3f}), with the gold "
          f"{labels['annotator_gold_accuracy']:.3f}, {labels['labels']} labels", flush=True)

    proxy = work / "proxy-rm"
    cli("train", "rm", "--db", ctx["db"], "--out", str(proxy), *rm_options(args), log=log)
    ctx["proxy"] = str(proxy)
    pairs_f = work / "heldout-gold-pairs.jsonl"
    n_pairs = parts.gold_pairs_file(Path(ctx["db"]), gold_fn, pairs_f)
    proxy_acc = cli("eval", "rm", "--model", str(proxy), "--data", str(pairs_f),
                    "--plot", str(work / "proxy-eval.png"), log=log)["accuracy"] if n_pairs else None
    print(f"proxy: accuracy {proxy_acc} on {n_pairs} held-out pairs ranked by the gold", flush=True)

    setup = {"labels": labels, "proxy_accuracy_gold": proxy_acc, "pairs": n_pairs}
    (work / "setup.json").write_text(json.dumps(setup))
    return setup


def build_hh_setup(args, ctx: dict) -> dict:
    """--labels hh: halves A (the policy's labels) and B (the gold's), held-out prompts in
    neither; the gold trained on B, the proxy on A's labels in the store."""
    work, log, mode = ctx["work"], ctx["log"], ctx["mode"]
    lines = [l for l in Path(args.prompt_file).read_text(encoding="utf-8").splitlines() if l.strip()]
    _, held_p = parts.split_prompts(parts.hh_prompts(Path(args.prompt_file)), 0, mode["heldout"],
                                    args.seed)
    half_a, half_b = parts.split_pairs_by_prompt(lines, set(held_p), args.seed)
    a_file, b_file = work / "pairs-a.jsonl", work / "pairs-b.jsonl"
    a_file.write_text("".join(l + "\n" for l in half_a), encoding="utf-8")
    b_file.write_text("".join(l + "\n" for l in half_b), encoding="utf-8")
    gold_start = time.perf_counter()
    gold = work / "gold-rm"
    cli("train", "rm", "--data", str(b_file), "--out", str(gold), *rm_options(args), log=log)
    ctx["gold"], ctx["gold_s"] = ["--rm", str(gold)], time.perf_counter() - gold_start
    held_f = parts.write_prompts(work / "heldout-prompts.jsonl", held_p, held_out=True)
    cli("import", str(held_f), "--format", "prompts", "--held-out", "--db", ctx["db"], log=log)
    cli("import", str(a_file), "--db", ctx["db"], log=log)
    train_p = parts.hh_prompts(a_file)
    ctx["train_prompts"] = str(parts.write_prompts(work / "train-prompts.jsonl", train_p))
    proxy = work / "proxy-rm"
    cli("train", "rm", "--db", ctx["db"], "--source", "human", "--out", str(proxy),
        *rm_options(args), log=log)
    ctx["proxy"] = str(proxy)
    acc = {f"{name}_accuracy_on_{half}": cli("eval", "rm", "--model", str(model), "--data",
                                             str(data), log=log)["accuracy"]
           for name, model, half, data in (("proxy", proxy, "b", b_file), ("gold", gold, "a", a_file))}
    print(f"HH halves: A {len(half_a)} pairs (the policy's), B {len(half_b)} (the gold's), "
          f"{len(held_p)} held-out prompts, {len(train_p)} single-turn training prompts; "
          f"proxy accuracy on B {acc['proxy_accuracy_on_b']:.3f}, gold on A "
          f"{acc['gold_accuracy_on_a']:.3f}", flush=True)
    labels = {"labels": len(half_a), "pairs_a": len(half_a), "pairs_b": len(half_b),
              "train_prompts": len(train_p), **acc}
    setup = {"labels": labels, "proxy_accuracy_gold": None, "pairs": 0}
    (work / "setup.json").write_text(json.dumps(setup))
    return setup


def reuse_setup(source: Path, work: Path, ctx: dict) -> dict:
    """Copy another run's setup (its store, proxy and held-out files) into WORK: more methods on
    the very same labels and proxy. The source's store must not be open in another process."""
    import shutil
    for name in SETUP_FILES:
        src = source / name
        if not src.exists():
            raise SystemExit(f"--setup-from: {src} is missing (a finished setup writes it)")
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    if (source / "studio.duckdb.wal").exists():
        shutil.copy2(source / "studio.duckdb.wal", work / "studio.duckdb.wal")
    ctx["proxy"] = str(work / "proxy-rm")
    print(f"setup copied from {source}", flush=True)
    return json.loads((work / "setup.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the ≤ 20-minute setting")
    p.add_argument("--tiny", action="store_true", help="the slow test's setting (tiny models)")
    p.add_argument("--workdir", default="/tmp/prefstudio-loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--gold", help="rm:DIR, a folder, run id, ensemble .json or a programmatic "
                                  "reward (length:20); default: an RM trained on --gold-data")
    p.add_argument("--gold-data", default=str(HH))
    p.add_argument("--gold-dir", help="where the default gold is kept (default WORKDIR/gold-rm)")
    p.add_argument("--prompts", type=int, help="training prompts (default per mode)")
    p.add_argument("--heldout", type=int, help="held-out prompts (default per mode)")
    p.add_argument("--prompt-file", default=str(HH), help="HH-format file the prompts come from")
    p.add_argument("--k", type=int, default=4, help="candidates per prompt")
    p.add_argument("--agreement", type=float, default=0.70, help="target annotator agreement")
    p.add_argument("--policy", default="smollm2-135m-instruct")
    p.add_argument("--rm-base", help="reward-model backbone of gold and proxy (default: the CLI's)")
    p.add_argument("--rm-args", default="", help="extra `train rm` options of gold and proxy "
                                                 "(default none: the default command)")
    p.add_argument("--labels", choices=("synthetic", "hh"), default="synthetic",
                   help="synthetic annotators ranking candidates by the gold (default), or the "
                        "HH file's people: half of its pairs train the policy, the gold is an RM "
                        "on the other half")
    p.add_argument("--png", default=str(PNG))
    p.add_argument("--setup-from", help="another run's WORKDIR/MODE-seedN: reuse its store, labels "
                                        "and proxy (run more methods on the same setup)")
    args = p.parse_args()
    mode_name = "tiny" if args.tiny else "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    mode["prompts"] = args.prompts or mode["prompts"]
    mode["heldout"] = args.heldout or mode["heldout"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")

    if args.labels == "hh" and (args.setup_from or args.gold):
        raise SystemExit("--labels hh makes its own gold (an RM on half B) and setup: "
                         "--gold and --setup-from do not apply")
    t0 = time.perf_counter()
    work = Path(args.workdir) / f"{mode_name}{'-hh' if args.labels == 'hh' else ''}-seed{args.seed}"
    if work.exists():
        raise SystemExit(f"{work} exists: remove it or give another --workdir / --seed")
    work.mkdir(parents=True)
    log = work / "cli.log"
    ctx = {"work": work, "log": log, "mode": mode, "db": str(work / "studio.duckdb")}
    gold_start = time.perf_counter()
    if args.labels == "hh":
        setup = build_hh_setup(args, ctx)
        gold_s = ctx["gold_s"]
    else:
        ctx["gold"] = gold_reward(args, log)
        gold_s = time.perf_counter() - gold_start
        setup = (reuse_setup(Path(args.setup_from), work, ctx) if args.setup_from
                 else build_setup(args, ctx))
    labels, proxy_acc, n_pairs = setup["labels"], setup["proxy_accuracy_gold"], setup["pairs"]
    proxy = Path(ctx["proxy"])
    proxy_fn = load_reward_spec(["--rm", str(proxy)], Path(ctx["db"]))
    setup_s = time.perf_counter() - t0 - gold_s

    results, curve = {}, []
    for name in methods:
        results[name], c = run_method(args, ctx, name, proxy_fn)
        curve += c
        r = results[name]
        print(f"{name}: gold gain {r['gold_gain']:+.3f} [{r['gold_gain_ci'][0]:+.3f}, "
              f"{r['gold_gain_ci'][1]:+.3f}], proxy gain {r['proxy_gain']:+.3f}, KL "
              f"{r['kl']:.2f}, win rate {r['win_rate']:.2f}, {r['wall_s']:.0f} s", flush=True)
    if curve:
        parts.plot_curve(curve, Path(args.png), f"RLOO against the proxy ({mode_name}): "
                                                f"gold vs proxy reward over KL")

    print(f"\n{'method':<8}{'gold gain [95% CI]':>28}{'proxy gain':>12}{'KL':>7}"
          f"{'win':>6}{'wall s':>8}")
    for name, r in results.items():
        ci = f"{r['gold_gain']:+.3f} [{r['gold_gain_ci'][0]:+.3f},{r['gold_gain_ci'][1]:+.3f}]"
        print(f"{name:<8}{ci:>28}{r['proxy_gain']:>+12.3f}{r['kl']:>7.2f}{r['win_rate']:>6.2f}"
              f"{r['wall_s']:>8.0f}")
    print(json.dumps({
        "methods": results, "curve": curve,
        "setup": {"mode": mode_name, "labels_from": args.labels, "gold": " ".join(ctx["gold"]),
                  "policy": args.policy,
                  "rm_base": args.rm_base, "rm_args": args.rm_args, "k": args.k,
                  "prompts": mode["prompts"], "heldout": mode["heldout"],
                  "max_new_tokens": mode["tokens"], **labels, "proxy_accuracy_gold": proxy_acc,
                  "proxy_eval_pairs": n_pairs, "gold_train_s": gold_s, "setup_s": setup_s,
                  "seed": args.seed},
        "stages_s": STAGE_SECONDS, "wall_s": time.perf_counter() - t0, "workdir": str(work)}))


if __name__ == "__main__":
    main()
