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
    raise CliError("generate: not implemented yet")


def cmd_judge(args) -> None:
    raise CliError("judge: not implemented yet")


def cmd_train(args) -> None:
    raise CliError(f"train {args.kind}: not implemented yet")


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
