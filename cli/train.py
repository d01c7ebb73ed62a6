"""prefstudio train rm|sft|rs|dpo|ppo|rloo|rrhf|cai: build the stage's config, read its data, train,
ingest the run folder. Which option applies to which stage is decided in ``stages``."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import stages
from .common import CliError, emit, fmt, is_main_rank, open_store, resolve_run
from .data import policy_data, preference_data, ranked_candidates, training_prompts, where

HELP = "train a reward model or optimise a policy"


def add_parser(sub) -> None:
    sp = sub.add_parser("train", help=HELP, description=HELP + ". Options marked [kinds] apply "
                        "to those stages only; any other stage refuses them.")
    sp.add_argument("kind", choices=stages.TRAIN_KINDS, help="what to train")
    sp.add_argument("--out", required=True, help="run folder for checkpoints, logs and the model; "
                                                 "the same --out again resumes an interrupted run")
    stages.add_options(sp, stages.TRAIN, stages.TRAIN_KINDS)


def run(args) -> None:
    stages.refuse_options_not_for(args.kind, args, stages.TRAIN, "train", "trainer")
    if args.kind in stages.FROM_LABELS and args.db and args.data:
        raise CliError("give --db or --data, not both")
    if args.kind == "rm":
        return _train_rm(args)
    return _train_policy(args)


# Options of `train sft|rs|dpo|ppo|rloo|rrhf` that map onto the stage's config fields.
POLICY_OPTIONS = ("lr", "batch_size", "grad_accum", "seed", "save_every", "lora_r",
                  "gradient_checkpointing", "precision",
                  "packing", "beta", "loss", "margin_scale", "reference", "k", "rounds",
                  "select", "top_fraction", "min_reward", "max_new_tokens", "temperature",
                  "kl_target", "critic", "ppo_epochs", "minibatch_size", "sft_weight",
                  "principles", "revisions", "round")


def _train_policy(args) -> None:
    """train sft | rs | dpo | ppo | rloo: build the config, read the data (rs/ppo/rloo: prompts
    and a reward), run the trainer, ingest the run."""
    from annotate.runlog import read_run
    from policy import cai, dpo, ppo, rloo, rrhf, rs, sft
    from policy.rewards import load_reward
    from policy.train_utils import run_parents

    train = {"sft": sft.train_sft, "rs": rs.train_rs, "dpo": dpo.train_dpo,
             "ppo": ppo.train_ppo, "rloo": rloo.train_rloo, "rrhf": rrhf.train_rrhf,
             "cai": cai.train_cai}[args.kind]
    args.model, args.rm = resolve_run(args.model, args.db), resolve_run(args.rm, args.db)
    try:
        config = policy_config(args)
        if args.kind == "rrhf":
            out = _train_rrhf(args, config)
        elif args.kind in stages.ONLINE:
            if args.rm and not Path(args.rm).exists():
                raise CliError(f"--rm {args.rm}: no such run folder, run id or ensemble file")
            prompts = training_prompts(args)   # never the held-out ones
            reward_fn, scorer = load_reward(args.rm, args.reward)
            extra = {"scorer": scorer} if args.kind == "rs" else {}
            out = train(config, prompts, reward_fn, args.out,
                        parents=run_parents(config.model, args.rm), **extra)
        elif args.kind == "cai":   # no reward: the policy critiques and revises itself
            out = train(config, training_prompts(args), args.out, parents=run_parents(config.model))
        else:
            data, lineage = policy_data(args)
            out = train(config, data, args.out, parents=run_parents(config.model), **lineage)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(f"train {args.kind}: {err}") from None
    from accelerate import PartialState
    if not PartialState().is_main_process:
        return   # under `accelerate launch`, rank 0 ingests and reports
    ingest_run(args, out)
    run = read_run(out)
    summary = run.get("summary") or {}
    emit(args, {"kind": args.kind, "run": run["id"], "out": str(out), "summary": summary},
         f"{args.kind} run {run['id']}: {summary.get('steps', 0)} steps, policy saved in {out}")


def _train_rrhf(args, config):
    """train rrhf: the labelled tasks' candidates ordered by their labels, or by --rm /
    --reward when given; with --prompts, K samples per prompt from the starting policy ordered
    by --rm / --reward."""
    from policy.rewards import load_reward
    from policy.rrhf import train_rrhf
    from policy.train_utils import run_parents

    sampling = [f"--{d.replace('_', '-')}" for d in ("k", "max_new_tokens", "temperature")
                if getattr(args, d) is not None]
    if args.prompts and args.data:
        raise CliError("give --prompts (candidates sampled from the policy) or --data "
                       "(labelled candidates), not both")
    if sampling and not args.prompts:
        raise CliError(f"{sampling[0]} samples candidates: it needs --prompts")
    ranker = args.rm or args.reward
    if args.prompts and not ranker:
        raise CliError("--prompts: sampled candidates need --rm or --reward to order them")
    reward_fn, scorer = load_reward(args.rm, args.reward) if ranker else (None, "labels")
    parents = run_parents(config.model, args.rm)
    if args.prompts:
        return train_rrhf(config, None, args.out, prompts=training_prompts(args),
                          reward_fn=reward_fn, scorer=scorer, parents=parents)
    candidates, lineage = ranked_candidates(args)
    return train_rrhf(config, candidates, args.out, reward_fn=reward_fn, scorer=scorer,
                      parents=parents, **lineage)


def policy_config(args):
    """The stage's config from --config JSON (optional), then the command-line options on top."""
    from policy import cai, dpo, ppo, rloo, rrhf, rs, sft
    from harness.config import build_config
    config_cls = {"sft": sft.SFTConfig, "rs": rs.RSConfig, "dpo": dpo.DPOConfig,
                  "ppo": ppo.PPOConfig, "rloo": rloo.RLOOConfig, "rrhf": rrhf.RRHFConfig,
                  "cai": cai.CAIConfig}[args.kind]
    options = {k: getattr(args, k, None) for k in POLICY_OPTIONS}
    if getattr(args, "thresholds", None) is not None:
        options["thresholds"] = _thresholds(args)
    options.update(model=args.model, max_steps=args.max_steps,
                   **_length_options(args.kind, args.max_length))
    return build_config(config_cls, options, args.config)


def _thresholds(args) -> list[float]:
    """--thresholds 0.5,0.7,0.9: ReST's rising quantiles, checked before anything loads."""
    from policy.rs import check_thresholds
    if args.select is not None or args.top_fraction is not None:
        raise CliError("--thresholds replaces --select / --top-fraction: ReST keeps every "
                       "sample above each Improve step's quantile")
    try:
        values = [float(x) for x in args.thresholds.split(",")]
    except ValueError:
        raise CliError(f"--thresholds: a comma list of quantiles in (0, 1), e.g. 0.5,0.7,0.9, "
                       f"not {args.thresholds!r}") from None
    try:
        check_thresholds(values)
    except ValueError as err:
        raise CliError(f"--{err}") from None
    return values


def _length_options(kind: str, max_length: int | None) -> dict:
    """--max-length N in each stage's own terms: sft and rs cut whole chats to N tokens; dpo
    keeps N per (prompt + response), half for each; ppo and rloo keep N prompt tokens (the
    response length is --max-new-tokens)."""
    if max_length is None:
        return {}
    if max_length < 2:
        raise CliError("--max-length must be at least 2 tokens")
    if kind in ("dpo", "rrhf"):
        return {"max_prompt_len": max_length - max_length // 2, "max_response_len": max_length // 2}
    if kind in ("ppo", "rloo"):
        return {"max_prompt_tokens": max_length}
    return {"max_len": max_length}


def ingest_run(args, out) -> None:
    """The CLI owns the database while its job runs in-process: ingest the run folder into it
    when the run read the store, or when --db was given with --prompts."""
    if args.data or (args.prompts and not args.db):
        return   # trained from files: the store is not involved unless --db is given
    from annotate import store
    with open_store(args.db) as db:
        store.ingest_run_dir(db, out)


# --- reward models ----------------------------------------------------------------------------

def _train_rm(args) -> None:
    from rewardmodel.train import train
    config = _rm_config(args)
    data = preference_data(args, args.data)
    eval_data = (preference_data(args, args.eval_data, include_held_out=True)
                 if args.eval_data else None)
    if not data.pairs and not data.rankings:
        raise CliError(f"{where(args, args.data)}: no preference pairs to train on "
                       "(check --source / --min-agreement / --label-rounds / --principle)")
    members = ensemble_members(config, args.seeds)
    summaries = []
    for member in members:
        try:
            summaries.append(train(member, data, eval_data=eval_data))
        except ValueError as err:  # e.g. a checkpoint of a different run in --out
            raise CliError(str(err)) from None
    if not is_main_rank():
        return   # under `accelerate launch`, rank 0 ingests and reports
    if not args.data:
        from annotate import store
        with open_store(args.db) as db:  # runs + metrics + lineage into the database
            for member, summary in zip(members, summaries):
                summary["ingested"] = store.ingest_run_dir(db, member.out)
    if len(members) == 1:
        summary = summaries[0]
        return emit(args, summary, (
            f"reward model in {args.out}: {summary['steps']} steps, final loss "
            f"{fmt(summary['final_loss'])}, held-out accuracy "
            f"{fmt(summary['best_eval_accuracy'])} ({summary['seconds']:.0f} s)"))
    from rewardmodel.score import write_ensemble
    config_file = write_ensemble(args.out, [m.out for m in members])
    accuracies = " ".join(fmt(s["best_eval_accuracy"]) for s in summaries)
    emit(args, {"ensemble": str(config_file), "members": summaries},
         f"ensemble of {len(members)} reward models in {args.out} (use --rm {args.out}): "
         f"members' held-out accuracy {accuracies} "
         f"({sum(s['seconds'] for s in summaries):.0f} s)")


def ensemble_members(config, seeds: str | None) -> list:
    """One config per seed of ``--seeds S1,S2,...`` (each in OUT/seed-S), or ``[config]``.
    Members differ only in their seed: the head, the LoRA init, the order of the batches and
    the held-out split, which is what makes their errors partly independent."""
    if not seeds:
        return [config]
    try:
        values = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise CliError(f"--seeds: expected comma-separated integers like 0,1,2, not {seeds!r}") from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise CliError("--seeds: give at least two different seeds (one model needs --seed)")
    return [dataclasses.replace(config, seed=s, out=str(Path(config.out) / f"seed-{s}"))
            for s in values]


def _rm_config(args):
    """RMConfig from --config JSON (optional), then the command-line options on top."""
    from rewardmodel.train import RMConfig
    try:
        return RMConfig.from_args(args)
    except ValueError as err:
        raise CliError(str(err)) from None