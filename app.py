"""prefstudio: the Gradio app (``python app.py``) and the ``prefstudio`` command line.

Thin wiring only: argument parsing, opening the workspace database, calling the layers.
Every command that fails on bad input exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import os

# Offline by default: no code path may reach a model hub or send telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE_PROJECT = HERE / "data" / "sample"


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


# --- workspace ------------------------------------------------------------------------------

def default_workspace() -> Path:
    return Path(os.environ.get("PREFSTUDIO_WORKSPACE", "workspace")).resolve()


def default_db() -> Path:
    return Path(os.environ.get("PREFSTUDIO_DB") or default_workspace() / "prefstudio.duckdb")


def open_store(db_path: str | Path | None, *, sample: bool = True, read_only: bool = False):
    """Open the workspace database; a new database gets the embedded sample project."""
    from annotate import store

    path = Path(db_path) if db_path else default_db()
    fresh = not path.exists()
    if read_only and fresh:
        raise CliError(f"{path}: no such database")
    db = store.Store(path, read_only=read_only)
    if fresh and sample and SAMPLE_PROJECT.exists():
        from annotate import formats
        formats.load_sample_project(db, SAMPLE_PROJECT)
    return db


def emit(args, result: dict, text: str | None = None) -> None:
    """Print a result as one JSON line (``--json``) or as text for people."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        print(text)


# --- commands -------------------------------------------------------------------------------

def cmd_serve(args) -> None:
    from annotate.ui import serve
    open_store(args.db).close()  # a new workspace gets the sample project before serving
    serve(db_path=args.db or default_db(), host=args.host, port=args.port,
          workspace=default_workspace())


def cmd_import(args) -> None:
    from annotate import formats
    with open_store(args.db) as db:
        result = formats.import_file(db, args.file, fmt=args.format, source=args.source,
                                     round=args.round, required_labels=args.required_labels)
    emit(args, result, formats.describe_import(result))


def cmd_export(args) -> None:
    from annotate import formats
    with open_store(args.db) as db:
        result = formats.export(db, args.what, args.out, source=args.source,
                                min_agreement=args.min_agreement)
    emit(args, result, f"wrote {result['rows']} {args.what} rows to {result['path']}")


def cmd_users(args) -> None:
    from annotate import store
    with open_store(args.db) as db:
        if args.action == "add":
            if not args.name or not args.role:
                raise CliError("users add needs NAME and --role admin|annotator")
            password = _read_password(args)
            store.add_user(db, args.name, args.role, password)
            emit(args, {"user": args.name, "role": args.role},
                 f"added {args.role} {args.name}")
        elif args.action == "list":
            users = store.list_users(db)
            emit(args, {"users": users},
                 "\n".join(f"{u['name']}\t{u['role']}" for u in users) or "(no users)")
        elif args.action == "set-role":
            store.set_role(db, args.name, args.role)
            emit(args, {"user": args.name, "role": args.role}, f"{args.name} is now {args.role}")
        elif args.action == "passwd":
            store.set_password(db, args.name, _read_password(args))
            emit(args, {"user": args.name}, f"password of {args.name} changed")


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass
        password = getpass.getpass(f"password for {args.name}: ")
    if not password:
        raise CliError("empty password")
    return password


def cmd_generate(args) -> None:
    from annotate import formats, store
    from annotate.runlog import new_run_id
    from policy.candidates import GenerateConfig, generate_candidates, model_identity

    try:
        config = GenerateConfig(
            model=args.model, adapter=args.adapter, k=args.k, temperatures=args.temperature,
            top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
            batch_size=args.batch_size, task=args.task, round=args.round, dtype=args.dtype).check()
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be a positive integer")
    if args.out and not args.out.endswith(".jsonl"):
        raise CliError(f"{args.out}: --out writes the responses format as JSONL: name it FILE.jsonl")

    if args.run_dir and (Path(args.run_dir) / "run.json").exists():
        raise CliError(f"{args.run_dir}: already holds a run; give a new --run-dir")
    # a prompts file is read (and refused if bad) before the database is opened or created
    prompts = formats.read_prompts(args.prompts)[:args.limit] if args.prompts else None

    def prompts_short_of_k(db) -> list[list[dict]]:
        model, adapter = model_identity(args.model, args.adapter)
        rows = store.prompts_needing_responses(db, args.k, model, adapter, args.limit)
        return [row["messages"] for row in rows]

    if args.out:  # a file instead of the database; a database only supplies the prompts
        if prompts is None:
            with open_store(args.db, read_only=True) as db:
                prompts = prompts_short_of_k(db)
        lines, summary = generate_candidates(config, prompts, None, progress=not args.json)
        _write_jsonl(Path(args.out), lines)
        emit(args, {**summary, "out": args.out}, _describe_generate(summary) + f"; wrote {args.out}")
        return
    with open_store(args.db) as db:
        if prompts is None:
            prompts = prompts_short_of_k(db)
        if not prompts:
            emit(args, {"prompts": 0}, f"nothing to do: every prompt has {args.k} responses "
                                       f"from {args.model}")
            return
        run_id = new_run_id("generate")
        run_dir = Path(args.run_dir or db.path.parent / "runs" / run_id)
        try:
            lines, summary = generate_candidates(config, prompts, run_dir, run_id=run_id,
                                                 progress=not args.json)
        finally:  # a failed or interrupted run still leaves what it generated in the store
            added = store.ingest_run_dir(db, run_dir) if (run_dir / "run.json").exists() else {}
    new = ", ".join(f"{added[k]} {k}" for k in ("prompts", "responses", "tasks"))
    emit(args, {**summary, "run_dir": str(run_dir), "added": added},
         _describe_generate(summary) + f"; added {new}; run folder {run_dir}")


def _describe_generate(s: dict) -> str:
    text = (f"generated {s['responses']} responses to {s['prompts']} prompts "
            f"({s['ranking_tasks']} ranking and {s['pairwise_tasks']} pairwise tasks), "
            f"{s['tokens']} tokens at {s['tokens_per_s']} tokens/s")
    if s["dropped"]:
        text += f"; {s['dropped']} empty or repeated candidates left out"
    return text


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write all or nothing: a crash never leaves half a file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def cmd_judge(args) -> None:
    from annotate import judges, store
    from annotate.runlog import new_run_id
    try:
        if args.report:
            name = judges.judge_name(judges.parse_judge_spec(args.judge).public, args.principle) \
                if args.judge and not args.name else args.name
            with open_store(args.db, read_only=True) as db:
                emit(args, judges.agreement_report(db, name))
            return
        if not args.judge:
            raise CliError("--judge: required (openai:URL#MODEL, local:SPEC or rm:DIR)")
        spec = judges.parse_judge_spec(args.judge)
        config = judges.JudgeConfig(
            judge=spec.public, name=args.name or "", both_orders=args.both_orders,
            principles_file=args.principles, principle=args.principle,
            rationale_first=args.rationale_first, labels=tuple(args.labels),
            tie_threshold=args.tie_threshold, margins=_margins(args.margin_thresholds),
            batch_size=args.batch_size, concurrency=args.concurrency, timeout=args.timeout,
            max_retries=args.max_retries, api_key_env=args.api_key_env, limit=args.limit)
        judges.select_principle(judges.load_principles(args.principles), args.principle)
        tasks = judges.read_task_snapshot(args.tasks) if args.tasks else None
        if tasks is not None and not args.out:
            raise CliError("--tasks: needs --out RUN_DIR (a snapshot run never opens the database)")
        judge = _make_judge(spec, config)
    except (judges.JudgeConfigError, judges.PrinciplesError) as err:
        raise CliError(str(err)) from None
    out = Path(args.out) if args.out else default_workspace() / "runs" / new_run_id("judge")
    progress = sys.stderr.isatty()
    try:
        if tasks is not None:
            from annotate.runlog import RunLog
            summary = judges.run_judge(tasks, judge, config, RunLog(out, "judge", config.to_json()),
                                       progress=progress)
        else:
            with open_store(args.db) as db:
                summary = judges.judge_store(db, judge, config, out, progress=progress)
    finally:
        judge.close()
    consistency = summary["position_consistency"]
    emit(args, summary, f"{summary['status']}: judged {summary['judged']} of {summary['tasks']} tasks "
         f"with {summary['annotator']} ({summary['failed']} failed)"
         + (f", position consistency {consistency:.3f}" if consistency is not None else "")
         + f"; run folder {summary['out']}")
    if summary["status"] != "done" or summary["failed"]:
        raise SystemExit(1)


def _margins(text: str) -> dict:
    """``--margin-thresholds 0.9,0.75,0.6`` → p(winner) needed for significantly/better/slightly."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not values[0] >= values[1] >= values[2]:
        raise CliError("--margin-thresholds: three decreasing probabilities, e.g. 0.9,0.75,0.6")
    return dict(zip(("significantly", "better", "slightly"), values))


def _make_judge(spec, config):
    """Load what the judge needs (the local LM, the reward model's scorer); annotate never does."""
    from annotate import judges
    lm = scorer = None
    if spec.kind == "local":  # a model spec, or a policy run folder (base + LoRA adapter)
        from policy.lm import load_policy
        lm = load_policy(spec.target)
    elif spec.kind == "rm":
        try:  # the reward-model engineer's batched scoring API
            from rewardmodel.score import load_scorer
        except ImportError:
            raise CliError("--judge rm: this version has no rewardmodel.score yet") from None
        scorer = load_scorer(spec.target).score
    return judges.build_judge(spec, config, lm=lm, scorer=scorer)


def cmd_train(args) -> None:
    if args.kind == "rm":
        return _train_rm(args)
    return _train_policy(args)


# Options of `train sft|rs|dpo|ppo|rloo` that map onto the stage's config fields.
POLICY_OPTIONS = ("lr", "batch_size", "grad_accum", "seed", "save_every", "lora_r",
                  "gradient_checkpointing",
                  "packing", "beta", "loss", "margin_scale", "reference", "k", "rounds",
                  "select", "top_fraction", "min_reward", "max_new_tokens", "temperature",
                  "kl_target", "critic", "ppo_epochs", "minibatch_size")


def _train_policy(args) -> None:
    """train sft | rs | dpo | ppo | rloo: build the config, read the data (rs/ppo/rloo: prompts
    and a reward), run the trainer, ingest the run."""
    from annotate.runlog import read_run
    from policy import dpo, ppo, rloo, rs, sft
    from policy.rewards import load_reward
    from harness.config import build_config
    from policy.train_utils import run_parents

    stage = {"sft": (sft.SFTConfig, sft.train_sft), "rs": (rs.RSConfig, rs.train_rs),
             "dpo": (dpo.DPOConfig, dpo.train_dpo), "ppo": (ppo.PPOConfig, ppo.train_ppo),
             "rloo": (rloo.RLOOConfig, rloo.train_rloo)}
    config_cls, train = stage[args.kind]
    options = {k: getattr(args, k, None) for k in POLICY_OPTIONS}
    options.update(model=args.model, max_steps=args.max_steps,
                   **_length_options(args.kind, args.max_length))
    try:
        config = build_config(config_cls, options, args.config)
        if args.kind in ("rs", "ppo", "rloo"):
            if not args.prompts:
                raise CliError(f"train {args.kind} needs --prompts FILE "
                               "(JSONL of {\"prompt\": ...})")
            from annotate.trainingdata import load_prompts
            prompts = load_prompts(args.prompts)
            reward_fn, scorer = load_reward(args.rm, args.reward)
            extra = {"scorer": scorer} if args.kind == "rs" else {}
            out = train(config, prompts, reward_fn, args.out,
                        parents=run_parents(config.model, args.rm), **extra)
        else:
            data, lineage = _policy_training_data(args)
            out = train(config, data, args.out, parents=run_parents(config.model), **lineage)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(f"train {args.kind}: {err}") from None
    from accelerate import PartialState
    if not PartialState().is_main_process:
        return   # under `accelerate launch`, rank 0 ingests and reports
    _ingest_run(args, out)
    run = read_run(out)
    summary = run.get("summary") or {}
    emit(args, {"kind": args.kind, "run": run["id"], "out": str(out), "summary": summary},
         f"{args.kind} run {run['id']}: {summary.get('steps', 0)} steps, policy saved in {out}")


def _length_options(kind: str, max_length: int | None) -> dict:
    """--max-length N in each stage's own terms: sft and rs cut whole chats to N tokens; dpo
    keeps N per (prompt + response), half for each; ppo and rloo keep N prompt tokens (the
    response length is --max-new-tokens)."""
    if max_length is None:
        return {}
    if max_length < 2:
        raise CliError("--max-length must be at least 2 tokens")
    if kind == "dpo":
        return {"max_prompt_len": max_length - max_length // 2, "max_response_len": max_length // 2}
    if kind in ("ppo", "rloo"):
        return {"max_prompt_tokens": max_length}
    return {"max_len": max_length}


def _policy_training_data(args) -> tuple[list, dict]:
    """Pairs (dpo) or chats (sft) from --data FILE or the store, with their lineage."""
    from annotate import trainingdata
    from policy.sft import chats_from_pairs, read_chats

    if args.kind == "sft" and args.data and _is_chat_file(args.data):
        return read_chats(args.data), {}
    if args.data:
        data = trainingdata.from_file(args.data)
    else:
        with open_store(args.db) as db:
            data = trainingdata.from_store(db)
    if not data.pairs:
        raise CliError(f"train {args.kind}: no preference pairs in "
                       f"{args.data or args.db or default_db()}")
    lineage = {"data_hash": data.data_hash, "label_ids": data.label_ids}
    return (chats_from_pairs(data.pairs) if args.kind == "sft" else data.pairs), lineage


def _is_chat_file(path: str) -> bool:
    """A JSONL file whose first record has "messages" is a chat file for SFT."""
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        return isinstance(row := json.loads(first), dict) and "messages" in row
    except json.JSONDecodeError:
        return False


def _ingest_run(args, out) -> None:
    """The CLI owns the database while its job runs in-process: ingest the run folder."""
    if not args.db and (args.data or args.prompts):
        return   # trained from files: the store is not involved unless --db is given
    from annotate import store
    with open_store(args.db) as db:
        store.ingest_run_dir(db, out)


def cmd_eval(args) -> None:
    if args.what == "rm":
        return _eval_rm(args)
    if args.what == "policy":
        return _eval_policy(args)
    raise CliError(f"eval {args.what}: not implemented yet")


# --- reward models (train rm / eval rm) -------------------------------------------------------

def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"  # set by torchrun / accelerate launch


def _rm_training_data(args, path: str | None, create_db: bool = True):
    """TrainingData from a file (any import format) or, without one, from the store."""
    from annotate import trainingdata
    rounds = [int(r) for r in args.label_rounds.split(",")] if getattr(args, "label_rounds", None) else None
    filters = dict(source=args.source, rounds=rounds, min_agreement=args.min_agreement,
                   principle=args.principle)
    if path:
        return trainingdata.from_file(path, **filters)
    # read-only: several processes under `accelerate launch` may read at once
    db_path = Path(args.db) if args.db else default_db()
    with open_store(db_path, read_only=db_path.exists() or not create_db) as db:
        return trainingdata.from_store(db, **filters)


def _train_rm(args) -> None:
    from rewardmodel.train import train
    if args.db and args.data:
        raise CliError("give --db or --data, not both")
    config = _rm_config(args)
    try:
        data = _rm_training_data(args, args.data)
        eval_data = _rm_training_data(args, args.eval_data) if args.eval_data else None
    except ValueError as err:
        raise CliError(str(err)) from None
    if not data.pairs and not data.rankings:
        raise CliError(f"{args.data or 'the database'}: no preference pairs to train on "
                       "(check --source / --min-agreement / --rounds)")
    try:
        summary = train(config, data, eval_data=eval_data)
    except ValueError as err:  # e.g. a checkpoint of a different run in --out
        raise CliError(str(err)) from None
    if not args.data and _is_main_rank():
        from annotate import store
        with open_store(args.db) as db:  # runs + metrics + lineage into the database
            summary["ingested"] = store.ingest_run_dir(db, args.out)
    if _is_main_rank():
        emit(args, summary, (f"reward model in {args.out}: {summary['steps']} steps, final loss "
                             f"{_fmt(summary['final_loss'])}, held-out accuracy "
                             f"{_fmt(summary['best_eval_accuracy'])} ({summary['seconds']:.0f} s)"))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _rm_config(args):
    """RMConfig from --config JSON (optional), then the command-line options on top."""
    from rewardmodel.train import RMConfig
    try:
        return RMConfig.from_args(args)
    except ValueError as err:
        raise CliError(str(err)) from None


def _eval_rm(args) -> None:
    from rewardmodel.evaluate import evaluate
    from rewardmodel.score import load_scorer
    model = Path(args.model)
    try:
        scorer = load_scorer(model)  # first: a wrong --model is reported before data is read
        data = _rm_training_data(args, args.data, create_db=False)
    except ValueError as err:  # a malformed ensemble config or data file
        raise CliError(str(err)) from None
    if not data.pairs:
        raise CliError(f"{args.data or 'the database'}: no preference pairs to evaluate")
    plot = args.plot or ((model if model.is_dir() else model.parent)
                         / f"eval-{Path(args.data).stem if args.data else 'db'}.png")
    result = evaluate(scorer, data, batch_size=args.batch_size or 16, plot=plot)
    emit(args, result)  # eval always prints one JSON line


def _eval_judge(args):
    """An AI judge comparing the policy's answer with the reference's (both orders)."""
    from annotate import judges
    from policy.evaluate import judge_preferences

    spec = judges.parse_judge_spec(args.judge)
    config = judges.JudgeConfig(judge=spec.public, principle=args.principle)
    principle = judges.select_principle(judges.load_principles(None), args.principle)
    if principle is None:
        raise CliError("eval policy: --principle random is not supported; name one")
    prefer = judge_preferences(_make_judge(spec, config), principle)
    return prefer


def _eval_policy(args) -> None:
    """eval policy: the policy vs its reference on held-out prompts; prints one JSON line."""
    from annotate.runlog import new_run_id
    from annotate.trainingdata import load_prompts
    from policy.evaluate import PolicyEvalConfig, evaluate_policy
    from policy.rewards import load_reward

    if not args.prompts:
        raise CliError("eval policy needs --prompts FILE (JSONL of {\"prompt\": ...})")
    cfg = PolicyEvalConfig()
    for key in ("max_new_tokens", "temperature", "seed"):
        if getattr(args, key) is not None:
            setattr(cfg.sampling, key, getattr(args, key))
    cfg.batch_size = args.batch_size or cfg.batch_size
    cfg.max_prompts = args.max_prompts
    model = Path(args.model)
    out = Path(args.out) if args.out else (
        (model if model.is_dir() else default_workspace() / "runs") / new_run_id("eval"))
    try:
        prompts = load_prompts(args.prompts)
        reward_fn, reward_name = load_reward(args.rm, args.reward)
        judge = _eval_judge(args) if args.judge else None
        try:
            result = evaluate_policy(args.model, prompts, reward_fn, out, cfg, judge=judge,
                                     reward_name=reward_name)
        finally:
            if judge is not None:
                judge.judge.close()
    except (ValueError, FileNotFoundError) as err:   # incl. judges' config errors
        raise CliError(f"eval policy: {err}") from None
    result.pop("config", None)
    emit(args, result)


# --- argument parsing -----------------------------------------------------------------------

def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefstudio", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        sp.add_argument("--db", help="database file (default: the workspace database, "
                                     "$PREFSTUDIO_DB or ./workspace/prefstudio.duckdb)")
        sp.add_argument("--json", action="store_true", help="print the result as one JSON line")
        return sp

    sp = command("serve", cmd_serve, "start the annotation studio in the browser")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=7860)

    sp = command("import", cmd_import, "import prompts, responses, pairs or rankings from a file")
    sp.add_argument("file")
    sp.add_argument("--format", default="auto",
                    choices=["auto", "hh", "pairs", "rankings", "prompts", "responses"])
    sp.add_argument("--source", help="source name stored with the prompts (default: file name)")
    sp.add_argument("--round", type=int, default=0, help="annotation round of the new tasks")
    sp.add_argument("--required-labels", type=int, default=1,
                    help="annotators needed per new task (overlap)")

    sp = command("export", cmd_export,
                 "export pairs, labels, rankings, prompts or responses to JSONL, CSV or Parquet")
    sp.add_argument("what", choices=["pairs", "labels", "rankings", "prompts", "responses"])
    sp.add_argument("--out", required=True, help="FILE.jsonl, FILE.csv or FILE.parquet")
    sp.add_argument("--source", default="both", choices=["human", "ai", "both"])
    sp.add_argument("--min-agreement", type=float)

    sp = command("users", cmd_users, "manage users and roles")
    sp.add_argument("action", choices=["add", "list", "set-role", "passwd"])
    sp.add_argument("name", nargs="?")
    sp.add_argument("--role", choices=["admin", "annotator"])
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    sp = command("generate", cmd_generate, "generate K candidate responses per prompt")
    sp.add_argument("--model", default="smollm2-135m-instruct",
                    help="model spec, folder or policy run folder")
    sp.add_argument("--adapter", help="a LoRA adapter folder (or run folder)")
    sp.add_argument("--k", type=int, default=4, help="candidates per prompt (default 4)")
    sp.add_argument("--prompts", help="JSONL of {\"prompt\": text or messages} to answer (default: "
                                      "the store's prompts with fewer than K responses from --model)")
    sp.add_argument("--temperature", type=_float_list, default=[0.3, 0.7, 1.0, 1.2],
                    help="one value, or a comma list cycled over the K candidates "
                         "(default 0.3,0.7,1.0,1.2)")
    sp.add_argument("--top-p", type=float, default=0.95)
    sp.add_argument("--max-new-tokens", type=int, default=256)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    sp.add_argument("--limit", type=int, help="answer at most this many prompts")
    sp.add_argument("--task", default="auto", choices=["auto", "ranking", "pairwise", "mixed", "none"],
                    help="make a task of each prompt's candidates: all of them (ranking; the "
                         "default 'auto' unless --k 1), the first and last (pairwise), "
                         "alternating (mixed), or none")
    sp.add_argument("--round", type=int, default=0, help="annotation round of the new tasks")
    sp.add_argument("--out", help="write the responses format to FILE.jsonl instead of the store")
    sp.add_argument("--run-dir", help="run folder (default: runs/<run id> beside the database)")

    sp = command("judge", cmd_judge, "label tasks with an AI judge (RLAIF)")
    sp.add_argument("--judge", help="openai:URL#MODEL | local:SPEC | rm:DIR")
    sp.add_argument("--both-orders", action="store_true",
                    help="ask A/B and B/A and average (position bias); K-way: every pair both ways")
    sp.add_argument("--principles", help="principles file (.md with '## name' sections, or .json; "
                                         "default data/principles.md)")
    sp.add_argument("--principle", help="principle to judge by (default: the file's first; "
                                        "'random': one per task)")
    sp.add_argument("--rationale-first", action="store_true",
                    help="let the judge explain before its verdict (chain of thought)")
    sp.add_argument("--tie-threshold", type=float, default=0.05,
                    help="store a tie when |p - 0.5| <= this (default 0.05)")
    sp.add_argument("--margin-thresholds", default="0.9,0.75,0.6",
                    help="p(winner) for significantly,better,slightly (below: negligibly)")
    sp.add_argument("--labels", default="AB", help="the two verdict options (default AB; e.g. 12)")
    sp.add_argument("--limit", type=int, help="judge at most N tasks")
    sp.add_argument("--batch-size", type=int, default=8, help="tasks per batch")
    sp.add_argument("--concurrency", type=int, default=4, help="parallel HTTP requests (openai)")
    sp.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    sp.add_argument("--max-retries", type=int, default=4, help="retries on 429/5xx/timeouts")
    sp.add_argument("--api-key-env", help="NAME of the environment variable holding the API key "
                                          "(no key is sent without it)")
    sp.add_argument("--name", help="annotator name of the labels (default: the judge spec, "
                                   "plus @principle when --principle is given)")
    sp.add_argument("--out", help="run folder (default: workspace/runs/<run id>); re-use it to resume")
    sp.add_argument("--tasks", help="task snapshot JSONL: judge these into --out without a database")
    sp.add_argument("--report", action="store_true",
                    help="print the agreement report (JSON) of AI judges against human labels")

    sp = command("train", cmd_train, "train a reward model or optimise a policy")
    sp.add_argument("kind", choices=["rm", "sft", "rs", "dpo", "ppo", "rloo"])
    sp.add_argument("--data", help="training file (any import format) instead of the store")
    sp.add_argument("--prompts", help="JSONL of {\"prompt\": ...} for rs/ppo/rloo")
    sp.add_argument("--model", help="policy model spec or run folder")
    sp.add_argument("--base", help="reward-model backbone spec")
    sp.add_argument("--rm", help="trained reward model (run folder or ensemble config)")
    sp.add_argument("--max-steps", type=int)
    sp.add_argument("--out", required=True, help="run folder for checkpoints, logs and the model")
    _add_training_options(sp)
    _add_rm_train_options(sp)
    _add_policy_train_options(sp)

    sp = command("eval", cmd_eval, "evaluate a reward model or a policy (prints one JSON line)")
    sp.add_argument("what", choices=["rm", "policy"])
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", help="pairs file for eval rm")
    sp.add_argument("--rm", help="reward model for eval policy")
    sp.add_argument("--prompts", help="prompts file for eval policy")
    sp.add_argument("--plot", help="eval rm: PNG of chosen vs rejected rewards "
                                   "(default: eval-<data>.png in the model folder)")
    _add_data_filters(sp)
    sp.add_argument("--batch-size", type=int, help="eval rm: pairs per batch; eval policy: "
                                                   "prompts per generate call")
    # eval policy: held-out prompts answered by the policy and by its reference
    sp.add_argument("--reward", help="eval policy: programmatic reward instead of --rm")
    sp.add_argument("--out", help="eval policy: folder for eval.json and the samples table "
                                  "(default: MODEL/eval-<time> for a run folder)")
    sp.add_argument("--max-prompts", type=int, help="eval policy: the first N prompts only")
    sp.add_argument("--max-new-tokens", type=int)
    sp.add_argument("--temperature", type=float, help="eval policy: 1.0 (default) makes the "
                                                      "KL estimate unbiased")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--judge", help="eval policy: also compare the answers with an AI judge "
                                    "(openai:URL#MODEL | local:SPEC | rm:DIR; principle from "
                                    "--principle)")
    return p


def _add_policy_train_options(sp) -> None:
    """Options of `train sft|rs|dpo|ppo|rloo`; unset options keep the stage's defaults."""
    g = sp.add_argument_group("policy (train sft, rs, dpo, ppo, rloo)")
    g.add_argument("--reward", help="programmatic reward instead of --rm: keyword:W1,W2 | "
                                    "length | length:N")
    g.add_argument("--packing", action="store_true", default=None, help="sft: pack chats into rows")
    g.add_argument("--beta", type=float, help="dpo: β (ipo: τ); ppo/rloo: KL coefficient")
    g.add_argument("--loss", choices=["sigmoid", "ipo"], help="dpo: the loss")
    g.add_argument("--margin-scale", type=float, help="dpo: offset = scale × label margin")
    g.add_argument("--reference", choices=["initial", "base"],
                   help="dpo: reference = the starting policy (default) or the bare base")
    g.add_argument("--k", type=int, help="rs/rloo: samples per prompt")
    g.add_argument("--rounds", type=int, help="rs: sample-select-train rounds")
    g.add_argument("--select", choices=["best", "top"],
                   help="rs: best of K per prompt, or the top fraction overall (RAFT)")
    g.add_argument("--top-fraction", type=float, help="rs: fraction kept with --select top")
    g.add_argument("--min-reward", type=float, help="rs: never keep a sample below this reward")
    g.add_argument("--max-new-tokens", type=int, help="rs/ppo/rloo: response length limit")
    g.add_argument("--temperature", type=float, help="rs/ppo/rloo: sampling temperature")
    g.add_argument("--kl-target", type=float,
                   help="ppo/rloo: adapt β towards this KL per response (nats)")
    g.add_argument("--critic", choices=["shared", "adapter"],
                   help="ppo: value head on the policy's hidden states (shared) or its own adapter")
    g.add_argument("--ppo-epochs", type=int, help="ppo: passes over each rollout batch (4)")
    g.add_argument("--minibatch-size", type=int, help="ppo: rollouts per optimizer update")


def _add_data_filters(sp) -> None:
    """Which labels become pairs (train rm / eval rm, from the store or a file)."""
    g = sp.add_argument_group("preference data filters")
    g.add_argument("--source", default="both", choices=["human", "ai", "both"],
                   help="labels by people, by AI judges, or both")
    g.add_argument("--min-agreement", type=float, help="drop pairs with lower annotator agreement")
    g.add_argument("--label-rounds", help="annotation rounds, comma-separated (default: all)")
    g.add_argument("--principle", help="only AI labels judged under this principle")


def _add_training_options(sp) -> None:
    """Options every `train` stage shares (config fields of the same name)."""
    g = sp.add_argument_group("training (every stage)")
    g.add_argument("--config", help="JSON file of config fields; options below override it")
    g.add_argument("--batch-size", type=int,
                   help="examples per micro-batch per process (rm, dpo: pairs; sft, rs: chats)")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--seed", type=int)
    g.add_argument("--max-length", type=int,
                   help="tokens per sequence (rm, sft, rs: a whole chat; dpo: prompt + response, "
                        "half each; ppo, rloo: the prompt); prompts are cut from the left so "
                        "the response survives")
    g.add_argument("--lora-r", type=int, help="LoRA rank of a new adapter (rm: 0 = full fine-tuning)")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in the backward pass (less memory, slower)")


def _add_rm_train_options(sp) -> None:
    """Options of `train rm` (RMConfig fields; --config FILE sets any of them from JSON)."""
    _add_data_filters(sp)
    g = sp.add_argument_group("reward model (train rm)")
    g.add_argument("--epochs", type=float, help="passes over the data (when --max-steps is unset)")
    g.add_argument("--full-finetune", action="store_true", help="train every weight, no LoRA")
    g.add_argument("--no-resume", action="store_true",
                   help="ignore a checkpoint left in --out by an interrupted run")
    g.add_argument("--rm-kind", choices=["decoder", "encoder"],
                   help="override the backbone kind detected from its config")
    g.add_argument("--lora-targets", help="module names, comma-separated, or all-linear "
                                          "(default: peft's choice for the architecture)")
    g.add_argument("--train-modules", help="extra modules trained in full, comma-separated "
                                           "(e.g. pooler)")
    g.add_argument("--eval-data", help="held-out file instead of the automatic split")
    g.add_argument("--eval-fraction", type=float, help="prompts kept aside for evaluation (0.1)")
    g.add_argument("--eval-every", type=int, help="evaluate and checkpoint every N steps")
    g.add_argument("--patience", type=int, help="stop after N evaluations without improvement")
    g.add_argument("--no-margin", action="store_true", help="ignore the labels' margin levels")
    g.add_argument("--margin-values", help='JSON map margin level -> m, e.g. '
                                           '{"significantly": 1, "better": 0.5}')
    g.add_argument("--no-soft-labels", action="store_true",
                   help="hard labels even where an AI judge gave a probability")
    g.add_argument("--no-rankings", action="store_true",
                   help="train K-way tasks as separate pairs, not with the ranking loss")
    g.add_argument("--center", type=float, help="reward-centering coefficient (e.g. 0.01)")


def _quiet_library_noise() -> None:
    """Silence two library messages that are about prefstudio's own choices, not the user's
    input: peft asks transformers 5 a deprecated question (a FutureWarning on every LoRA
    model), and tokenizers warn when a text is longer than the model's limit — prefstudio
    tokenizes whole texts on purpose and cuts them to --max-length itself (prompts from the left)."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_library_noise()
    from annotate.store import StoreBusy, StoreError
    from harness.hub import ModelNotAvailable
    try:
        args.func(args)
    except (CliError, StoreError, StoreBusy, ModelNotAvailable) as err:
        print(f"prefstudio {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prefstudio {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 1:  # `python app.py` starts the studio, like `prefstudio serve`
        sys.argv.append("serve")
    sys.exit(main())
