"""prefstudio eval rm|policy: one JSON line — a reward model's accuracy on pairs, or a policy
against its reference on held-out prompts."""
from __future__ import annotations

from pathlib import Path

from . import stages
from .common import CliError, emit, resolve_run, workspace
from .data import evaluation_prompts, preference_data, where

HELP = "evaluate a reward model or a policy (prints one JSON line)"


def add_parser(sub) -> None:
    sp = sub.add_parser("eval", help=HELP, description=HELP + ". Options marked [kinds] apply "
                        "to those evaluations only.")
    sp.add_argument("what", choices=stages.EVAL_KINDS, help="what to evaluate")
    stages.add_options(sp, stages.EVAL, stages.EVAL_KINDS)


def run(args) -> None:
    stages.refuse_options_not_for(args.what, args, stages.EVAL, "eval", "evaluation")
    args.model = resolve_run(args.model, args.db)
    if args.what == "rm":
        return _eval_rm(args)
    return _eval_policy(args)


def _eval_rm(args) -> None:
    from rewardmodel.evaluate import evaluate
    from rewardmodel.score import load_scorer
    model = Path(args.model)
    try:
        scorer = load_scorer(model)  # first: a wrong --model is reported before data is read
    except ValueError as err:  # a malformed ensemble config
        raise CliError(str(err)) from None
    held_out = args.labels == "held-out"
    data = preference_data(args, args.data, include_held_out=True, only_held_out=held_out)
    if not data.pairs:
        raise CliError(f"{where(args, args.data)}: no preference pairs to evaluate" + (
            " on held-out prompts (mark prompts held out in Browse or at import, label their "
            "tasks, or give --labels all)" if held_out else ""))
    folder = Path(args.out) if args.out else (model if model.is_dir() else model.parent)
    plot = args.plot or folder / f"eval-{Path(args.data).stem if args.data else 'db'}.png"
    log = _run_log(args, "eval_rm", {"model": str(model), "data": args.data,
                                     "labels": args.labels or "all"}) if args.out else None
    try:
        result = evaluate(scorer, data, batch_size=args.batch_size or 16, plot=plot)
    except BaseException as err:
        if log is not None:
            log.fail(err)
        raise
    if log is not None:
        log.metric(0, accuracy=result["accuracy"], calibration_error=result["calibration_error"],
                   reward_chosen=result["reward_chosen_mean"],
                   reward_rejected=result["reward_rejected_mean"])
        log.finish("done", **result)
    emit(args, result)  # eval always prints one JSON line


def _run_log(args, kind: str, config: dict):
    """A run folder for the evaluation (``--out``): the studio runs evaluations as jobs and
    ingests their folder like a training run's (metrics, status, the parent run)."""
    from annotate.runlog import RunLog, read_run
    parents = [read_run(p)["id"] for p in (Path(args.model), Path(getattr(args, "rm", None) or "."))
               if (p / "run.json").exists() and p.resolve() != Path(args.out).resolve()]
    return RunLog(args.out, kind, config, parents=parents)


def _eval_judge(args):
    """An AI judge comparing the policy's answer with the reference's (both orders)."""
    from annotate import judges
    from policy.evaluate import judge_preferences

    from .judge import make_judge
    spec = judges.parse_judge_spec(args.judge)
    config = judges.JudgeConfig(judge=spec.public, principle=args.principle)
    principle = judges.select_principle(judges.load_principles(None), args.principle)
    if principle is None:
        raise CliError("eval policy: --principle random is not supported; name one")
    return judge_preferences(make_judge(spec, config, args.db), principle)


def _eval_policy(args) -> None:
    """eval policy: the policy vs its reference on held-out prompts (--prompts FILE, or the
    store's prompts marked held out); prints one JSON line."""
    from annotate.runlog import new_run_id
    from policy.evaluate import PolicyEvalConfig, evaluate_policy
    from policy.rewards import load_reward
    from policy.served import GenerationFailed, ServerSettings

    args.rm = resolve_run(args.rm, args.db)
    cfg = PolicyEvalConfig()
    for key in ("max_new_tokens", "temperature", "seed"):
        if getattr(args, key) is not None:
            setattr(cfg.sampling, key, getattr(args, key))
    cfg.batch_size = args.batch_size or cfg.batch_size
    cfg.max_prompts = args.max_prompts
    args.reference = resolve_run(args.reference, args.db)
    model = Path(args.model)
    out = Path(args.out) if args.out else (
        (model if model.is_dir() else workspace(args.db) / "runs") / new_run_id("eval"))
    args.out = str(out)
    log = _run_log(args, "eval_policy", {"model": args.model, "rm": args.rm,
                                         "reward": args.reward, "prompts": args.prompts})
    try:
        prompts = evaluation_prompts(args)   # without --prompts: the store's held-out ones
        reward_fn, reward_name = load_reward(args.rm, args.reward)
        server = ServerSettings(api_key_env=args.api_key_env,
                                concurrency=args.concurrency or 4).check()
        judge = _eval_judge(args) if args.judge else None
        try:
            result = evaluate_policy(args.model, prompts, reward_fn, out, cfg, judge=judge,
                                     reward_name=reward_name, reference_model=args.reference,
                                     server=server)
        finally:
            if judge is not None:
                judge.judge.close()
    except (ValueError, FileNotFoundError, GenerationFailed) as err:   # incl. judges' config errors
        log.fail(err)
        raise CliError(f"eval policy: {err}") from None
    except BaseException as err:
        log.fail(err)
        raise
    result.pop("config", None)
    log.metric(0, **{k: result[k] for k in ("reward_policy", "reward_reference", "reward_gain",
                                              "win_rate", "kl") if result.get(k) is not None})
    log.finish("done", **result)
    emit(args, result)
