"""The judge job: label a list of tasks with one judge, writing only the run folder.

    run_judge(tasks, judge, config, runlog)

``tasks`` come from ``store.tasks_lacking_label`` (the CLI) or a snapshot file the server
wrote (``read_task_snapshot``); the job never opens the database. Each batch of tasks is
judged together and appended to the run folder:

    labels.jsonl    one ``store.label_row`` per judged task (the database owner ingests them)
    failures.jsonl  {"task_id", "kind", "error"} per task the judge could not decide
    metrics.jsonl   judged / failed / total after each batch (the UI's progress bar)

Resuming: tasks already in this folder's labels.jsonl are skipped, and the CLI only hands
over tasks the database has no label for, so re-running continues where a run stopped.
A task with any failed comparison gets no label (it is retried next run); after
``max_consecutive_failures`` failed tasks in a row (a dead server) the job stops.
"""
from __future__ import annotations

import hashlib
import json
import sys
import traceback
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..runlog import RunLog, read_records
from ..store.db import content_id
from ..store.labels import label_row
from .aggregate import DEFAULT_MARGINS, combine_orders, pairwise_label, ranking_from_pairs
from .base import Judge, JudgeConfigError, JudgeError, JudgeSpec, Verdict
from .principles import load_principles, principle_for_task, select_principle
from .prompt import Comparison


@dataclass
class JudgeConfig:
    judge: str                                   # the judge spec without secrets
    name: str = ""                               # annotator name of its labels (default: judge_name)
    both_orders: bool = False
    principles_file: str | None = None           # default data/principles.md
    principle: str | None = None                 # None: the first; "random": one per task
    rationale_first: bool = False
    labels: tuple[str, str] = ("A", "B")         # the verdict options shown to the judge
    tie_threshold: float = 0.05
    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    batch_size: int = 8                          # tasks per batch
    concurrency: int = 4                         # parallel HTTP requests (openai)
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 0.5                         # first retry delay, doubled each time
    api_key_env: str | None = None               # NAME of the variable holding the key
    limit: int | None = None
    max_consecutive_failures: int = 20
    rationale_tokens: int = 128
    max_context_chars: int = 6000
    max_response_chars: int = 3000

    def __post_init__(self):
        self.labels = tuple(self.labels)
        if not self.name:
            self.name = judge_name(self.judge, self.principle)
        if len(self.labels) != 2 or len(set(self.labels)) != 2 or not all(
                isinstance(x, str) and x.strip() == x and x for x in self.labels):
            raise JudgeConfigError("--labels: two different options without spaces, e.g. AB or 12")
        if not 0 <= self.tie_threshold < 0.5:
            raise JudgeConfigError("--tie-threshold: must be in [0, 0.5)")
        if any(not 0.5 <= v <= 1 for v in self.margins.values()):
            raise JudgeConfigError("--margin-thresholds: each must be a p(winner) in [0.5, 1]")
        for key in ("batch_size", "concurrency", "max_consecutive_failures", "rationale_tokens"):
            if getattr(self, key) < 1:
                raise JudgeConfigError(f"--{key.replace('_', '-')}: must be at least 1")
        if self.limit is not None and self.limit < 0:
            raise JudgeConfigError("--limit: must not be negative")

    def to_json(self) -> dict:
        return asdict(self) | {"labels": list(self.labels)}


def judge_name(spec: str, principle: str | None = None) -> str:
    """The annotator name of a judge's labels: its public spec, plus ``@principle`` if fixed."""
    return spec if principle is None else f"{spec}@{principle}"


def run_judge(tasks: list[dict], judge: Judge, config: JudgeConfig, runlog: RunLog, *,
              on_labels: Callable[[list[dict]], None] | None = None, progress: bool = True) -> dict:
    """Judge ``tasks`` into ``runlog``'s folder; returns the summary also stored in run.json."""
    principles = load_principles(config.principles_file)
    fixed = select_principle(principles, config.principle)
    done = {r["task_id"] for r in read_records(runlog.dir, "labels")}
    todo = [t for t in tasks if t["id"] not in done]
    if config.limit is not None:
        todo = todo[:config.limit]
    counts = {"judged": 0, "failed": 0, "consistent": 0, "pairs_both_orders": 0}
    streak, last_error = 0, None
    runlog.log(f"judging {len(todo)} tasks with {config.name} ({len(done)} already in this run)")
    bar = tqdm(total=len(todo), desc="judge", unit="task", disable=not progress, file=sys.stderr)
    try:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            plans = [_plan(t, principle_for_task(principles, fixed, t["id"]), config, judge)
                     for t in batch]
            comparisons = [c for plan in plans for _, _, _, c in plan["comparisons"]]
            # nothing a judge says is stored before its secrets are redacted (redact.py)
            results = [judge.redacted(r) for r in judge.judge(comparisons)]
            labels, failures, k = [], [], 0
            for task, plan in zip(batch, plans):
                n = len(plan["comparisons"])
                mine, k = results[k:k + n], k + n
                errors = [r for r in mine if isinstance(r, BaseException)]
                if errors:
                    failures.append({"task_id": task["id"], "kind": errors[0].kind,
                                     "error": str(errors[0]), "run_id": runlog.id})
                    streak, last_error = streak + 1, str(errors[0])
                    continue
                streak = 0
                row, pair_flags = _label(task, plan, mine, config, runlog.id)
                labels.append(row)
                counts["pairs_both_orders"] += len(pair_flags)
                counts["consistent"] += sum(pair_flags)
            runlog.record("labels", labels)
            runlog.record("failures", failures)
            if labels and on_labels is not None:
                on_labels(labels)
            counts["judged"] += len(labels)
            counts["failed"] += len(failures)
            bar.update(len(batch))
            runlog.metric(len(done) + start + len(batch), judged=counts["judged"],
                          failed=counts["failed"], total=len(todo))
            if streak >= config.max_consecutive_failures:
                summary = _summary(config, runlog, todo, done, counts, stopped=True)
                runlog.finish("failed", error=f"stopped after {streak} failed tasks in a row; "
                                              f"last: {last_error}", **summary)
                return summary | {"status": "failed"}
    except BaseException as exc:
        _fail(runlog, exc, judge)
        raise
    finally:
        bar.close()
    summary = _summary(config, runlog, todo, done, counts, stopped=False)
    runlog.finish("done", **summary)
    return summary | {"status": "done"}


def _fail(runlog: RunLog, exc: BaseException, judge: Judge) -> None:
    """``runlog.fail(exc)`` with the judge's secrets redacted from the traceback and message."""
    runlog.log(judge.redact("".join(traceback.format_exception(exc))))
    runlog.finish("stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                  error=judge.redact(f"{type(exc).__name__}: {exc}"))


def _summary(config, runlog, todo, done, counts, stopped) -> dict:
    pairs = counts["pairs_both_orders"]
    return {"run_id": runlog.id, "out": str(runlog.dir), "judge": config.judge,
            "annotator": config.name, "tasks": len(todo), "judged": counts["judged"],
            "failed": counts["failed"], "already_in_run": len(done),
            "not_reached": len(todo) - counts["judged"] - counts["failed"] if stopped else 0,
            "position_consistency": counts["consistent"] / pairs if pairs else None}


def shown_first(task_id: str, x: str, y: str) -> bool:
    """Whether x is shown as A in the first order: a coin flip fixed by the ids, so the
    first position is not whatever came first in the imported file (often the chosen one)."""
    return hashlib.sha256(f"{task_id}|{x}|{y}".encode()).digest()[0] % 2 == 0


def _plan(task: dict, principle, config: JudgeConfig, judge: Judge) -> dict:
    """The comparisons one task needs: every pair, in one or both orders."""
    text = {r["id"]: r["text"] for r in task["responses"]}
    ids = list(task["response_ids"])
    both = config.both_orders and not judge.position_invariant
    comps = []
    for x, y in combinations(ids, 2):
        a, b = (x, y) if shown_first(task["id"], x, y) else (y, x)
        for order, (first, second) in enumerate([(a, b), (b, a)] if both else [(a, b)]):
            comps.append((x, y, (first, second),
                          Comparison(task["messages"], text[first], text[second], principle)))
    return {"ids": ids, "principle": principle, "comparisons": comps}


def _label(task: dict, plan: dict, verdicts: list[Verdict], config: JudgeConfig,
           run_id: str) -> tuple[dict, list[bool]]:
    """One label row from a task's verdicts; also the consistency flag of each pair."""
    by_pair: dict[tuple[str, str], list] = {}
    for (x, y, shown, _), v in zip(plan["comparisons"], verdicts):
        by_pair.setdefault((x, y), []).append((shown, v))
    pair_p, pair_details, flags, hard = {}, [], [], False
    for (x, y), seen in by_pair.items():
        # p(x > y) as each order saw it: p_A if x was shown as A, else 1 - p_A.
        estimates = [v.p_first if shown[0] == x else 1.0 - v.p_first for shown, v in seen]
        p1, p2 = estimates[0], (estimates[1] if len(estimates) > 1 else None)
        p_x, consistent = combine_orders(p1, p2)
        pair_p[(x, y)] = p_x
        hard = hard or any(v.hard for _, v in seen)
        if consistent is not None:
            flags.append(consistent)
        pair_details.append({"x": x, "y": y, "p_x": p_x, "position_consistent": consistent,
                             "orders": [_raw(shown, v) for shown, v in seen]})
    details = {"hard": hard, "both_orders": config.both_orders, "labels": list(config.labels),
               "rationale_first": config.rationale_first,
               "position_consistent": (all(flags) if flags else None), "run_id": run_id}
    ids = plan["ids"]
    if len(ids) == 2:
        x, y = ids
        fields = pairwise_label(x, y, pair_p[(x, y)], config.tie_threshold, config.margins, hard)
        details.update(p_preferred={x: pair_p[(x, y)], y: 1.0 - pair_p[(x, y)]},
                       pairs=pair_details)
        rationale = next((v.rationale for _, v in by_pair[(x, y)] if v.rationale), None)
    else:
        ranking, scores = ranking_from_pairs(ids, pair_p, config.tie_threshold)
        fields = {"ranking": ranking, "soft_prob": None, "margin_level": None}
        details.update(scores=scores, pairs=pair_details,
                       consistent_pairs=sum(flags), pairs_both_orders=len(flags))
        rationale = None
    first_shown = plan["comparisons"][0][2]
    shown_order = list(first_shown) + [i for i in ids if i not in first_shown]
    row = label_row(task, config.name, fields["ranking"], source="ai", judge=config.judge,
                    margin_level=fields["margin_level"], soft_prob=fields["soft_prob"],
                    rationale=rationale, principle=plan["principle"].name,
                    shown_order=shown_order, details=details,
                    label_id=content_id("ai-label", run_id, task["id"], config.name))
    return row, flags


def _raw(shown: tuple[str, str], v: Verdict) -> dict:
    return {"shown": list(shown), "p_first_shown": v.p_first, "hard": v.hard,
            "text": v.text[:1000], "rationale": v.rationale, "info": v.info}


# -- task snapshots: how the server hands tasks to a judge subprocess -----------------------

SNAPSHOT_FIELDS = ("id", "response_ids", "messages", "responses")


def write_task_snapshot(tasks: list[dict], path: str | Path) -> Path:
    """One task per line, as ``store.tasks_lacking_label`` returns them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps({k: t[k] for k in ("id", "kind", "round", "prompt_id",
                                                  "response_ids", "messages", "responses")
                                if k in t}, ensure_ascii=False, default=str) + "\n")
    return path


def read_task_snapshot(path: str | Path) -> list[dict]:
    """Read and check a snapshot; a bad line raises ``JudgeConfigError`` naming file:line:field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise JudgeConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    tasks = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            t = json.loads(line)
        except json.JSONDecodeError as err:
            raise JudgeConfigError(f"{where}: invalid JSON: {err.msg}") from None
        if not isinstance(t, dict):
            raise JudgeConfigError(f"{where}: a task must be a JSON object")
        for key in SNAPSHOT_FIELDS:
            if key not in t:
                raise JudgeConfigError(f"{where}: {key}: missing")
        ids = t["response_ids"]
        if not isinstance(ids, list) or len(ids) < 2 or len(set(ids)) != len(ids):
            raise JudgeConfigError(f"{where}: response_ids: needs two or more distinct ids")
        if not isinstance(t["messages"], list) or not t["messages"] or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in t["messages"]):
            raise JudgeConfigError(f"{where}: messages: must be a list of {{role, content}}")
        texts = {r.get("id"): r.get("text") for r in t["responses"] if isinstance(r, dict)} \
            if isinstance(t["responses"], list) else {}
        missing = [i for i in ids if not isinstance(texts.get(i), str)]
        if missing:
            raise JudgeConfigError(f"{where}: responses: no text for response {missing[0]!r}")
        tasks.append(t)
    return tasks


# -- the CLI's database mode ------------------------------------------------------------------

def judge_store(db, judge: Judge, config: JudgeConfig, out_dir: str | Path, *,
                progress: bool = True, ingest_every: float = 10.0) -> dict:
    """Judge the tasks of ``db`` that lack ``config.name``'s label (the CLI's database mode).

    The job itself still writes only ``out_dir``; as the database's owner this ingests the
    folder (``store.ingest_run_dir``, idempotent) at most every ``ingest_every`` seconds while
    it grows and once at the end, so an interrupted run loses nothing it wrote.
    """
    import time
    from .. import store
    from ..runlog import new_run_id

    out_dir = Path(out_dir)
    if (out_dir / "run.json").exists():      # an earlier run into this folder: take in its labels
        store.ingest_run_dir(db, out_dir)
    tasks = store.tasks_lacking_label(db, config.name, limit=config.limit)
    runlog = RunLog(out_dir, "judge", config.to_json(),
                    run_id=None if (out_dir / "run.json").exists() else new_run_id("judge"))
    last = [time.monotonic()]

    def ingest(_rows: list[dict]) -> None:
        if time.monotonic() - last[0] >= ingest_every:
            store.ingest_run_dir(db, out_dir)
            last[0] = time.monotonic()

    try:
        return run_judge(tasks, judge, config, runlog, on_labels=ingest, progress=progress)
    finally:
        store.ingest_run_dir(db, out_dir)   # also after a crash: run.json then says failed


def build_judge(spec: JudgeSpec, config: JudgeConfig, *, lm=None, scorer=None) -> Judge:
    """The judge for ``spec`` with ``config``'s settings. ``lm`` is the loaded (model,
    tokenizer) for ``local:``, ``scorer`` the reward model's scoring function for ``rm:``;
    the caller loads them (annotate never loads a model)."""
    if spec.kind == "openai":
        from .openai_judge import OpenAIJudge
        return OpenAIJudge(spec, labels=config.labels, rationale_first=config.rationale_first,
                           api_key_env=config.api_key_env, concurrency=config.concurrency,
                           timeout=config.timeout, max_retries=config.max_retries,
                           backoff=config.backoff, rationale_tokens=config.rationale_tokens,
                           max_context_chars=config.max_context_chars,
                           max_response_chars=config.max_response_chars)
    if spec.kind == "local":
        from .local_judge import LocalJudge
        model, tokenizer = lm
        return LocalJudge(model, tokenizer, config.judge, labels=config.labels,
                          rationale_first=config.rationale_first, batch_size=config.batch_size,
                          rationale_tokens=config.rationale_tokens,
                          max_context_chars=config.max_context_chars,
                          max_response_chars=config.max_response_chars)
    from .rm_judge import RewardModelJudge
    return RewardModelJudge(scorer, config.judge)
