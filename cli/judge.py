"""prefstudio judge: label tasks with an AI judge (RLAIF), or report judges' agreement."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import CliError, emit, open_store, resolve_run, workspace

HELP = "label tasks with an AI judge (RLAIF)"


def add_parser(sub) -> None:
    sp = sub.add_parser("judge", help=HELP, description=HELP)
    sp.add_argument("--judge", help="openai:URL#MODEL | local:SPEC | rm:DIR (SPEC and DIR: a "
                                    "folder or a run id)")
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
    sp.add_argument("--out", help="run folder (default: runs/<run id> beside the database); "
                                  "re-use it to resume")
    sp.add_argument("--tasks", help="task snapshot JSONL: judge these into --out without a database")
    sp.add_argument("--report", action="store_true",
                    help="print the agreement report (JSON) of AI judges against human labels")


def run(args) -> None:
    from annotate import judges
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
        judge = make_judge(spec, config, args.db)
    except (judges.JudgeConfigError, judges.PrinciplesError) as err:
        raise CliError(str(err)) from None
    out = Path(args.out) if args.out else workspace(args.db) / "runs" / new_run_id("judge")
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


def make_judge(spec, config, db=None):
    """Load what the judge needs (the local LM, the reward model's scorer); annotate never does.
    A local model or reward model may be named by its run id."""
    from annotate import judges
    lm = scorer = None
    if spec.kind == "local":  # a model spec, or a policy run folder (base + LoRA adapter)
        from policy.lm import load_policy
        lm = load_policy(resolve_run(spec.target, db))
    elif spec.kind == "rm":
        from rewardmodel.score import load_scorer
        scorer = load_scorer(resolve_run(spec.target, db)).score
    return judges.build_judge(spec, config, lm=lm, scorer=scorer)
