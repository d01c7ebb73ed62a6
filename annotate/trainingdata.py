"""What trainers read: pairs and rankings from the store, or from any importable file.

A file is read by importing it into a throw-away store and asking that store for pairs, so
there is one parser per format (``formats``) and one definition of a pair (the SQL in
``store.pairs``), whether the data came from annotators or from a file.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import store


@dataclass
class PairExample:
    prompt: list[dict]                 # chat messages ending with the user's turn
    chosen: str
    rejected: str
    margin: float = 0.0                # numeric Llama-2 margin (store.margin_levels values)
    margin_level: str | None = None
    soft_prob: float | None = None     # p(chosen preferred) from an AI judge, if any
    weight: float = 1.0                # annotator agreement in [0, 1] (1 for a single label)
    task_id: str | None = None
    label_ids: tuple[str, ...] = ()


@dataclass
class RankingExample:
    prompt: list[dict]
    responses: list[str]
    ranking: list[list[int]]           # tie groups of indices into responses, best first
    weight: float = 1.0
    task_id: str | None = None
    label_ids: tuple[str, ...] = ()


@dataclass
class TrainingData:
    pairs: list[PairExample]
    rankings: list[RankingExample] = field(default_factory=list)
    label_ids: list[str] = field(default_factory=list)
    data_hash: str = ""


def _hash(rows: list) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


def from_store(db: store.Store, *, source: str = "both", rounds: Sequence[int] | None = None,
               judge: str | None = None, principle: str | None = None,
               min_agreement: float | None = None, include_held_out: bool = False,
               only_held_out: bool = False) -> TrainingData:
    """Aggregated pairs (majority direction, agreement as weight) and the current rankings.
    Labels of held-out prompts are left out unless ``include_held_out`` (evaluation only): a
    policy or reward model trained here never sees the prompts it is measured on.
    ``only_held_out`` keeps nothing else (an evaluation on what no model trained on)."""
    held = store.held_out_task_ids(db)
    if only_held_out:
        keep = lambda task_id: task_id in held            # noqa: E731
    else:
        keep = lambda task_id: include_held_out or task_id not in held   # noqa: E731
    rows = [r for r in store.pairs(db, source=source, rounds=rounds, judge=judge,
                                   principle=principle, min_agreement=min_agreement)
            if keep(r["task_id"])]
    pairs = [PairExample(prompt=json.loads(r["prompt"]), chosen=r["chosen"], rejected=r["rejected"],
                         margin=float(r["margin"] or 0.0), margin_level=r["margin_level"],
                         soft_prob=r["soft_prob"], weight=float(r["agreement"]),
                         task_id=r["task_id"], label_ids=tuple(sorted(r["label_ids"])))
             for r in rows]
    rankings = [_ranking_example(r) for r in store.rankings(db, source=source, rounds=rounds,
                                                              judge=judge, principle=principle)
                if keep(r["task_id"])]
    label_ids = sorted({lid for p in pairs for lid in p.label_ids}
                       | {lid for r in rankings for lid in r.label_ids})
    digest = _hash([[p.prompt, p.chosen, p.rejected, p.margin, p.soft_prob, p.weight] for p in pairs]
                   + [[r.prompt, r.responses, r.ranking] for r in rankings])
    return TrainingData(pairs=pairs, rankings=rankings, label_ids=label_ids, data_hash=digest)


def _ranking_example(row: dict) -> RankingExample:
    ids = list(row["response_ids"])
    return RankingExample(prompt=json.loads(row["prompt"]), responses=list(row["texts"]),
                          ranking=[[ids.index(rid) for rid in group] for group in row["ranking"]],
                          task_id=row["task_id"], label_ids=(row["label_id"],))


def from_file(path: str | Path, fmt: str = "auto", **filters) -> TrainingData:
    """Read any import format (hh, pairs, rankings; JSONL, CSV, Parquet) into training data."""
    from . import formats

    with tempfile.TemporaryDirectory(prefix="prefstudio-data-") as tmp:
        with store.Store(Path(tmp) / "data.duckdb") as db:
            formats.import_file(db, path, fmt=fmt)
            return from_store(db, **filters)


def load_prompts(path: str | Path, held_out: bool | None = None) -> list[list[dict]]:
    """Prompts for RS / PPO / RLOO / eval: JSONL lines of {"prompt": text or messages}.
    ``held_out=False`` (training) drops rows marked ``"held_out": true``; ``True`` keeps only
    them; ``None`` keeps every row."""
    from . import formats
    return formats.read_prompts(path, held_out=held_out)
