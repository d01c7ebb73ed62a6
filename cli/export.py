"""prefstudio export: pairs, labels, rankings, prompts or responses to JSONL, CSV or Parquet;
``export model RUN --out DIR``: a trained policy or reward model as a folder serving stacks load."""
from __future__ import annotations

import shutil
from pathlib import Path

from .common import CliError, emit, open_store, resolve_run

HELP = ("export pairs, labels, rankings, prompts or responses (JSONL, CSV, Parquet, Label Studio, "
        "Argilla, Hugging Face datasets), or a trained model as a folder serving stacks load")


def add_parser(sub) -> None:
    sp = sub.add_parser("export", help=HELP, description=HELP)
    sp.add_argument("what", choices=["pairs", "labels", "rankings", "prompts", "responses", "model"],
                    help="what to export")
    sp.add_argument("--out", required=True, help="FILE.jsonl, FILE.csv or FILE.parquet; FILE.json "
                                                 "(labelstudio); a folder (argilla, hf; model: a "
                                                 "new or empty folder)")
    sp.add_argument("--format", default="auto", choices=["auto", "labelstudio", "argilla", "hf"],
                    help="auto: from --out's suffix; labelstudio or argilla: the current labels "
                         "(labels|rankings) for those tools; hf: pairs|rankings as a Hugging Face "
                         "dataset folder (Parquet shards + dataset card)")
    sp.add_argument("--source", default="both", choices=["human", "ai", "both"],
                    help="labels by people, by AI judges, or both (default both)")
    sp.add_argument("--min-agreement", type=float,
                    help="pairs: drop those with lower annotator agreement")
    _add_model_options(sp)


def run(args) -> None:
    if args.what == "model" or args.model_run is not None:
        if args.format != "auto":
            raise CliError("--format is for data exports; export model writes a transformers folder")
        return run_model(args)
    from annotate import formats
    with open_store(args.db) as db:
        result = formats.export(db, args.what, args.out, source=args.source,
                                min_agreement=args.min_agreement, fmt=args.format)
    emit(args, result, f"wrote {result['rows']} {args.what} rows to {result['path']}")


# --- export model ---------------------------------------------------------------------------

def _add_model_options(sp) -> None:
    # dest is not "run": the parser's default ``run`` is the command's function
    sp.add_argument("model_run", nargs="?", metavar="RUN",
                    help="model: a run id (as the studio shows it), a run folder, or an "
                         "ensemble .json")
    sp.add_argument("--adapter", action="store_true",
                    help="model (policy): write the PEFT adapter folder instead of merged weights")


def run_model(args) -> None:
    """A policy (merged, or ``--adapter``), a reward model or an ensemble, into a new folder."""
    if args.what != "model":
        raise CliError(f"RUN ({args.model_run}) is for `export model` only")
    if not args.model_run:
        raise CliError("export model: name the run (a run id, a run folder or an ensemble .json)")
    source = Path(resolve_run(args.model_run, args.db))
    if not source.exists():
        raise CliError(f"{args.model_run}: no such run id or folder")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"--out {out}: exists and is not an empty folder")
    export, what = _model_exporter(source, args.adapter)
    existed = out.exists()
    try:
        result = export(source, out)
    except BaseException as err:  # leave no half-written folder behind (an empty one stays)
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        if isinstance(err, ValueError):  # an ensemble config that does not hold together
            raise CliError(str(err)) from None
        raise
    emit(args, result, f"exported {what} {source} to {out}")


def _model_exporter(source: Path, adapter: bool):
    from policy import export as policy_export
    from rewardmodel import export as rm_export
    if policy_export.is_policy_run(source):
        if adapter:
            return policy_export.export_adapter, "the policy adapter of"
        return policy_export.export_merged, "the policy (adapter merged) of"
    if adapter:
        raise CliError(f"{source}: --adapter applies to policy runs; this is not one")
    if rm_export.is_reward_run(source):
        return rm_export.export_reward_model, "the reward model of"
    if rm_export.is_ensemble_config(source):
        return rm_export.export_ensemble, "the reward-model ensemble"
    kind = _run_kind(source)
    raise CliError(f"{source}: {'a ' + kind + ' run' if kind else 'this'} holds no model "
                   "(no policy.json or rm.json; an ensemble is a .json with \"models\")")


def _run_kind(source: Path) -> str | None:
    import json
    try:
        return json.loads((source / "run.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
