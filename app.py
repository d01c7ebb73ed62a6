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
    raise CliError("generate: not implemented yet")


def cmd_judge(args) -> None:
    raise CliError("judge: not implemented yet")


def cmd_train(args) -> None:
    if args.kind in ("sft", "rs", "dpo"):
        return _train_policy_offline(args)
    raise CliError(f"train {args.kind}: not implemented yet")


# Options of `train sft|rs|dpo|ppo|rloo` that map onto the stage's config fields.
POLICY_OPTIONS = ("lr", "batch_size", "grad_accum", "seed", "save_every", "lora_r",
                  "gradient_checkpointing", "max_len",
                  "packing", "beta", "loss", "margin_scale", "reference", "k", "rounds",
                  "select", "top_fraction", "min_reward", "max_new_tokens", "temperature")


def _train_policy_offline(args) -> None:
    """train sft | rs | dpo: build the config, read the data, run the trainer, ingest the run."""
    from annotate.runlog import read_run
    from policy import dpo, rs, sft
    from policy.rewards import load_reward
    from policy.train_utils import build_config, run_parents

    stage = {"sft": (sft.SFTConfig, sft.train_sft), "rs": (rs.RSConfig, rs.train_rs),
             "dpo": (dpo.DPOConfig, dpo.train_dpo)}
    config_cls, train = stage[args.kind]
    options = {k: getattr(args, k) for k in POLICY_OPTIONS}
    options.update(model=args.model, max_steps=args.max_steps)
    try:
        config = build_config(config_cls, options, args.config)
        if args.kind == "rs":
            if not args.prompts:
                raise CliError("train rs needs --prompts FILE (JSONL of {\"prompt\": ...})")
            from annotate.trainingdata import load_prompts
            prompts = load_prompts(args.prompts)
            reward_fn, scorer = load_reward(args.rm, args.reward)
            out = train(config, prompts, reward_fn, args.out, scorer=scorer,
                        parents=run_parents(config.model, args.rm))
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
    raise CliError(f"eval {args.what}: not implemented yet")


# --- argument parsing -----------------------------------------------------------------------

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
    sp.add_argument("--model", default="smollm2-135m-instruct")
    sp.add_argument("--adapter", help="a LoRA adapter folder (or run folder)")
    sp.add_argument("--k", type=int, default=4)

    sp = command("judge", cmd_judge, "label tasks with an AI judge (RLAIF)")
    sp.add_argument("--judge", help="openai:URL#MODEL | local:SPEC | rm:DIR")
    sp.add_argument("--both-orders", action="store_true")

    sp = command("train", cmd_train, "train a reward model or optimise a policy")
    sp.add_argument("kind", choices=["rm", "sft", "rs", "dpo", "ppo", "rloo"])
    sp.add_argument("--data", help="training file (any import format) instead of the store")
    sp.add_argument("--prompts", help="JSONL of {\"prompt\": ...} for rs/ppo/rloo")
    sp.add_argument("--model", help="policy model spec or run folder")
    sp.add_argument("--base", help="reward-model backbone spec")
    sp.add_argument("--rm", help="trained reward model (run folder or ensemble config)")
    sp.add_argument("--max-steps", type=int)
    sp.add_argument("--out", required=True, help="run folder for checkpoints, logs and the model")
    # policy training (sft, rs, dpo, ppo, rloo); unset options keep the stage's defaults
    sp.add_argument("--config", help="JSON file of config fields (options below override it)")
    sp.add_argument("--reward", help="programmatic reward instead of --rm: keyword:W1,W2 | "
                                     "length | length:N")
    sp.add_argument("--lr", type=float)
    sp.add_argument("--batch-size", type=int, help="sequences (dpo: pairs) per micro-batch")
    sp.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--save-every", type=int, help="checkpoint every N steps (0: only at the end)")
    sp.add_argument("--lora-r", type=int, help="LoRA rank of a new adapter")
    sp.add_argument("--gradient-checkpointing", action="store_true", default=None,
                    help="recompute activations in the backward pass (less memory, slower)")
    sp.add_argument("--max-len", type=int, help="sft/rs: tokens per chat")
    sp.add_argument("--packing", action="store_true", default=None, help="sft: pack chats into rows")
    sp.add_argument("--beta", type=float, help="dpo: β (ipo: τ); ppo/rloo: KL coefficient")
    sp.add_argument("--loss", choices=["sigmoid", "ipo"], help="dpo: the loss")
    sp.add_argument("--margin-scale", type=float, help="dpo: offset = scale × label margin")
    sp.add_argument("--reference", choices=["initial", "base"],
                    help="dpo: reference = the starting policy (default) or the bare base")
    sp.add_argument("--k", type=int, help="rs/rloo: samples per prompt")
    sp.add_argument("--rounds", type=int, help="rs: sample-select-train rounds")
    sp.add_argument("--select", choices=["best", "top"],
                    help="rs: best of K per prompt, or the top fraction overall (RAFT)")
    sp.add_argument("--top-fraction", type=float, help="rs: fraction kept with --select top")
    sp.add_argument("--min-reward", type=float, help="rs: never keep a sample below this reward")
    sp.add_argument("--max-new-tokens", type=int, help="rs/ppo/rloo: response length limit")
    sp.add_argument("--temperature", type=float, help="rs/ppo/rloo: sampling temperature")

    sp = command("eval", cmd_eval, "evaluate a reward model or a policy (prints one JSON line)")
    sp.add_argument("what", choices=["rm", "policy"])
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", help="pairs file for eval rm")
    sp.add_argument("--rm", help="reward model for eval policy")
    sp.add_argument("--prompts", help="prompts file for eval policy")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from annotate.store import StoreBusy, StoreError
    from rewardmodel.hub import ModelNotAvailable
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
