"""prefstudio generate: K candidate responses per prompt, into the store or a file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import CliError, emit, open_store, resolve_run, workspace

HELP = "generate K candidate responses per prompt"


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, not {text!r}")


def add_parser(sub) -> None:
    sp = sub.add_parser("generate", help=HELP, description=HELP)
    sp.add_argument("--model", default="smollm2-135m-instruct",
                    help="model spec, folder, or policy run (folder or run id)")
    sp.add_argument("--adapter", help="a LoRA adapter folder (or run folder or run id)")
    sp.add_argument("--k", type=int, default=4, help="candidates per prompt (default 4)")
    sp.add_argument("--prompts", help="JSONL of {\"prompt\": text or messages} to answer (default: "
                                      "the store's prompts with fewer than K responses from --model)")
    sp.add_argument("--temperature", type=_float_list, default=[0.3, 0.7, 1.0, 1.2],
                    help="one value, or a comma list cycled over the K candidates "
                         "(default 0.3,0.7,1.0,1.2)")
    sp.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    sp.add_argument("--max-new-tokens", type=int, default=256, help="response length limit")
    # (the default follows the round: candidates are content-addressed, so a new round from the
    # same policy with the same seed would repeat the last round's texts and make no new task)
    sp.add_argument("--seed", type=int, default=None,
                    help="first candidate's seed (one per candidate; default: the --round number, "
                         "so each round samples new candidates)")
    sp.add_argument("--batch-size", type=int, default=16, help="sequences per generate call")
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights' dtype (bfloat16 on GPUs)")
    sp.add_argument("--limit", type=int, help="answer at most this many prompts")
    sp.add_argument("--task", default="auto", choices=["auto", "ranking", "pairwise", "mixed", "none"],
                    help="make a task of each prompt's candidates: all of them (ranking; the "
                         "default 'auto' unless --k 1), the first and last (pairwise), "
                         "alternating (mixed), or none")
    sp.add_argument("--round", type=int, default=0, help="annotation round of the new tasks")
    sp.add_argument("--out", help="write the responses format to FILE.jsonl instead of the store")
    sp.add_argument("--run-dir", help="run folder (default: runs/<run id> beside the database); "
                                      "with --out, also written (and continued if it holds a "
                                      "generate run: the studio's generate job)")
    sp.add_argument("--run-only", action="store_true",
                    help="write the run folder only, never open the database (the studio's jobs: "
                         "the server ingests the folder); needs --prompts and --run-dir")
    served = sp.add_argument_group("a served model (--model openai:URL#MODEL)")
    served.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    served.add_argument("--api-key-env", metavar="NAME",
                        help="environment variable holding the API key (never stored)")
    served.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    served.add_argument("--max-retries", type=int, default=4,
                        help="retries of a request on 429/5xx/timeouts (default 4)")


def run(args) -> None:
    from annotate import formats, store
    from annotate.runlog import new_run_id
    from policy.candidates import GenerateConfig, generate_candidates, model_identity
    from policy.served import ServerSettings, is_served

    served = is_served(args.model)
    if not served:
        args.model, args.adapter = resolve_run(args.model, args.db), resolve_run(args.adapter, args.db)
    try:
        config = GenerateConfig(
            model=args.model, adapter=args.adapter, k=args.k, temperatures=args.temperature,
            top_p=args.top_p, max_new_tokens=args.max_new_tokens,
            seed=args.round if args.seed is None else args.seed,
            batch_size=args.batch_size, task=args.task, round=args.round, dtype=args.dtype,
            server=ServerSettings(api_key_env=args.api_key_env, concurrency=args.concurrency,
                                  timeout=args.timeout, max_retries=args.max_retries)).check()
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be a positive integer")
    if args.out and not args.out.endswith(".jsonl"):
        raise CliError(f"{args.out}: --out writes the responses format as JSONL: name it FILE.jsonl")
    if args.run_only and not (args.prompts and args.run_dir):
        raise CliError("--run-only needs --prompts FILE and --run-dir DIR (it never opens the database)")
    if args.run_dir and (Path(args.run_dir) / "run.json").exists() and not (
            (args.out or args.run_only) and _unfinished_generate(Path(args.run_dir))):
        # a generate run the studio queued (--run-only), or one continued with --out FILE
        raise CliError(f"{args.run_dir}: already holds a run; give a new --run-dir")
    # a prompts file is read (and refused if bad) before the database is opened or created
    prompts = formats.read_prompts(args.prompts)[:args.limit] if args.prompts else None
    model = model_identity(args.model)[0] if served else args.model
    existing = None          # served: per prompt, the answers it already has from this model
    if args.run_only:   # the studio queued this run: its run.json is there, the server ingests
        run_dir, on_lines = Path(args.run_dir), None
        if served:   # kept as they come, so a resumed job asks only for what is missing
            from . import generate_resume as resume
            kept = run_dir / "served-answers.jsonl"
            prompts, existing = resume.missing_in_file(kept, prompts, model, args.k)
            on_lines = lambda lines: resume.append_jsonl(kept, lines)   # noqa: E731
        summary = _generate(generate_candidates, config, prompts, run_dir, existing=existing,
                            on_lines=on_lines, progress=not args.json)
        emit(args, {**summary, "run_dir": args.run_dir},
             _describe(summary) + f"; run folder {args.run_dir}")
        return

    def prompts_short_of_k(db) -> list[list[dict]]:
        nonlocal existing
        model, adapter = model_identity(args.model, args.adapter)
        rows = store.prompts_needing_responses(db, args.k, model, adapter, args.limit)
        existing = [[{"text": t, "model": model, "adapter": adapter} for t in row["texts"]]
                    for row in rows] if served else None
        return [row["messages"] for row in rows]

    if args.out:  # a file instead of the database; a database only supplies the prompts
        if prompts is None:
            with open_store(args.db, read_only=True) as db:
                prompts = prompts_short_of_k(db)
        # with --run-dir the run folder is written too (the studio's job: its watcher ingests it)
        run_dir = Path(args.run_dir) if args.run_dir else None
        if not served:
            lines, summary = generate_candidates(config, prompts, run_dir, progress=not args.json)
            _write_jsonl(Path(args.out), lines)
        else:   # appended prompt by prompt; what the file already has is not asked again
            from .generate_resume import missing_in_file, append_jsonl
            prompts, existing = missing_in_file(Path(args.out), prompts, model, args.k)
            summary = _generate(generate_candidates, config, prompts, run_dir, existing=existing,
                              on_lines=lambda lines: append_jsonl(Path(args.out), lines),
                              progress=not args.json)
        emit(args, {**summary, "out": args.out}, _describe(summary) + f"; wrote {args.out}")
        return
    with open_store(args.db) as db:
        if served:     # what earlier runs killed before they finished did get, counts
            from .generate_resume import ingest_orphans, short_in_store
            ingest_orphans(db, workspace(args.db) / "runs")
            if prompts is not None:
                prompts, existing = short_in_store(db, prompts, args.k, model)
        if prompts is None:
            prompts = prompts_short_of_k(db)
        if not prompts:
            emit(args, {"prompts": 0}, f"nothing to do: every prompt has {args.k} responses "
                                       f"from {model}")
            return
        run_id = new_run_id("generate")
        run_dir = Path(args.run_dir or workspace(args.db) / "runs" / run_id)
        try:
            summary = _generate(generate_candidates, config, prompts, run_dir, run_id=run_id,
                              progress=not args.json, existing=existing)
        finally:  # a failed or interrupted run still leaves what it generated in the store
            added = store.ingest_run_dir(db, run_dir) if (run_dir / "run.json").exists() else {}
    new = ", ".join(f"{added[k]} {k}" for k in ("prompts", "responses", "tasks"))
    emit(args, {**summary, "run_dir": str(run_dir), "added": added},
         _describe(summary) + f"; added {new}; run folder {run_dir}")


def _generate(generate_candidates, *args, **kwargs) -> dict:
    """Run the generation; a served model's final failure becomes one line."""
    from policy.served import GenerationFailed
    try:
        return generate_candidates(*args, **kwargs)[1]
    except GenerationFailed as err:
        raise CliError(f"{err} (the answers received are kept; run the same command again "
                       "to ask only for the missing ones)") from None


def _unfinished_generate(run_dir: Path) -> bool:
    """A generate run the studio queued, or one interrupted: it may be run again in its folder."""
    from annotate.runlog import read_run
    run = read_run(run_dir)
    return run.get("kind") == "generate" and run.get("status") != "done"


def _describe(s: dict) -> str:
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
