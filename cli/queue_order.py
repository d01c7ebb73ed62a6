"""prefstudio queue-order: rank a round's tasks for active selection, and use that order.

The studio's *Queue order* choice runs this as a job (``--tasks`` snapshot, ``--out`` run
folder; the server ingests its ``priorities.jsonl``). Run on a database directly it ranks,
stores the ranks and sets the round's order in one go.
"""
from __future__ import annotations

from pathlib import Path

from .common import CliError, emit, open_store, resolve_run, workspace

HELP = "rank tasks for the queue (active selection: uncertainty, disagreement, diverse, mix)"


def add_parser(sub) -> None:
    from annotate.store.priorities import ORDERS
    from rewardmodel.active import DEFAULT_CLUSTERS

    sp = sub.add_parser("queue-order", help=HELP, description=HELP)
    # required, but checked in run: the studio's form check parses the command without it
    sp.add_argument("--order", choices=ORDERS,
                    help="the queue's order (default: the hashed order, nothing to rank)")
    sp.add_argument("--rm", help="reward model (run id, run folder or ensemble .json) for "
                                 "uncertainty, disagreement and mix")
    sp.add_argument("--round", type=int, help="rank this round's tasks and set its order "
                                              "(default: every task, every round)")
    sp.add_argument("--clusters", type=int, default=DEFAULT_CLUSTERS,
                    help=f"k-means clusters of the prompts for diverse and mix ({DEFAULT_CLUSTERS})")
    sp.add_argument("--seed", type=int, default=0, help="k-means and tie-break seed")
    sp.add_argument("--batch-size", type=int, default=16, help="responses per scoring batch")
    sp.add_argument("--tasks", help="task snapshot JSONL: rank these into --out without a database")
    sp.add_argument("--out", help="run folder (default: runs/<run id> beside the database)")


def rank_rows(tasks: list[dict], order: str, scorer, rm_id: str, clusters: int = 10,
              seed: int = 0, batch_size: int = 16) -> list[dict]:
    """priorities.jsonl rows: every task's rank under ``order`` (``scorer``: a loaded reward
    model or ensemble, for the orders that need one)."""
    from rewardmodel import active

    items = [active.Task(t["id"], t["messages"], {r["id"]: r["text"] for r in t["responses"]},
                         t.get("ai_ranking")) for t in tasks]
    if order in active.NEEDS_RM:
        active.score_responses(scorer, items, batch_size=batch_size)
    groups = None
    if order in ("diverse", "mix"):
        groups = active.cluster(active.embed_prompts([t.prompt for t in items]), clusters, seed)
    ranked = active.rank(order, items, groups, seed=seed)
    by_id = {t.id: (t, None if groups is None else groups[i]) for i, t in enumerate(items)}
    rows = []
    for position, task_id in enumerate(ranked):
        t, c = by_id[task_id]
        score = (active.disagreement(t) if order == "disagreement"
                 else active.uncertainty(t)[1] if t.rewards else None)
        rows.append({"task_id": task_id, "order": order, "rm": rm_id if order in active.NEEDS_RM
                     else "", "rank": position, "score": score, "cluster": c})
    return rows


def run(args) -> None:
    from annotate import store
    from annotate.runlog import new_run_id
    from rewardmodel import active

    if args.order is None:
        raise CliError("--order: required (" + ", ".join(active.ORDERS) + ")")
    if args.order == "default":
        if args.tasks:
            raise CliError("--order default: nothing to rank (it is the hashed order)")
        with open_store(args.db) as db:
            emit(args, store.priorities.set_queue_order(db, "default", None, args.round, by="cli"))
        return
    if args.order in active.NEEDS_RM and not args.rm:
        raise CliError(f"--rm: the {args.order} order needs a reward model")
    if args.order not in active.NEEDS_RM and args.rm:
        raise CliError(f"--rm: the {args.order} order uses no reward model")
    if args.clusters < 1:
        raise CliError("--clusters: must be 1 or more")
    rm_path = resolve_run(args.rm, args.db) if args.rm else None
    rm_id = Path(rm_path).name if rm_path and (Path(rm_path) / "run.json").exists() else (args.rm or "")
    out = Path(args.out) if args.out else workspace(args.db) / "runs" / new_run_id("queue-order")
    config = {"order": args.order, "rm": rm_id or None, "round": args.round,
              "clusters": args.clusters, "seed": args.seed}
    if args.tasks:
        tasks = _read_snapshot(Path(args.tasks))
        _rank_into(out, config, tasks, rm_path, rm_id, args)
        emit(args, {"out": str(out), "tasks": len(tasks)},
             f"ranked {len(tasks)} tasks by {args.order}; run folder {out}")
        return
    with open_store(args.db) as db:
        store.priorities.check_choice(db, args.order, rm_id or None, args.round)
        tasks = store.priorities.tasks_to_rank(db, args.round)
        if not tasks:
            raise CliError("there are no tasks to rank" + (f" in round {args.round}"
                                                           if args.round is not None else ""))
        _rank_into(out, config, tasks, rm_path, rm_id, args)
        store.ingest_run_dir(db, out)
        chosen = store.priorities.set_queue_order(db, args.order, rm_id or None, args.round,
                                                  by="cli")
    emit(args, {**chosen, "tasks": len(tasks), "out": str(out)},
         f"round {'*' if args.round is None else args.round}: queue order {args.order} over "
         f"{len(tasks)} tasks; run folder {out}")


def _rank_into(out: Path, config: dict, tasks: list[dict], rm_path, rm_id: str, args) -> None:
    from annotate.runlog import RunLog

    log = RunLog(out, "queue-order", config, parents=[rm_id] if rm_id else [])
    try:
        scorer = None
        if rm_path:
            from rewardmodel.score import load_scorer
            scorer = load_scorer(rm_path)
        rows = rank_rows(tasks, args.order, scorer, rm_id, args.clusters, args.seed,
                         args.batch_size)
        log.record("priorities", rows)
    except BaseException as exc:
        log.fail(exc)
        raise
    log.finish("done", tasks=len(rows))


def _read_snapshot(path: Path) -> list[dict]:
    """The studio's snapshot (``jobinputs.write_round_tasks``), checked as a judge's is."""
    from annotate import judges

    try:
        tasks = judges.read_task_snapshot(path)
    except judges.JudgeConfigError as err:
        raise CliError(f"--tasks: {err}") from None
    if not tasks:
        raise CliError(f"--tasks: {path}: no tasks")
    return tasks
