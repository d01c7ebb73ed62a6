"""Active selection: which tasks teach the reward model most, as an order over tasks.

Each order returns the task ids, the one to label first first (the queue serves them in that
order, level by level of overlap: ``annotate.store.queue_index``):

* ``uncertainty`` — uncertainty sampling (Lewis & Gale 1994, "A sequential algorithm for
  training text classifiers"): tasks whose responses the reward model separates least,
  ``min |r_a − r_b|`` over the task's pairs. With an ensemble (``score.Ensemble`` of two or
  more models) the members' votes come first, query-by-committee style (Seung, Opper &
  Sompolinsky 1992): tasks where the largest minority of members prefers the other response
  of some pair, then the smallest margin of the ensemble's summed reward.
* ``disagreement`` — tasks where an AI judge's current label and the reward model disagree,
  the strongest disagreement (the RM's margin against the judge) first; tasks the judge has
  not labelled come last.
* ``diverse`` — the prompts embedded with MiniLM (mean-pooled, normalised), k-means into
  ``clusters`` groups, and the clusters served in turn (one task from each, then the next
  one from each...), in a seeded random order within a cluster: a batch covers the prompt
  space instead of one dense corner of it.
* ``mix`` — the clusters of ``diverse`` served in turn, the most uncertain task of each
  cluster first: diversity and uncertainty together, the idea of Zhdanov 2019 ("Diverse
  mini-batch active learning", arXiv:1901.05954), here as a round-robin rather than his
  uncertainty-weighted k-means.

Only scoring is here (a reward model, MiniLM); ``prefstudio queue-order`` runs it as a job and
the store keeps the result (``annotate.store.priorities``).
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from annotate.store.priorities import NEEDS_RM, ORDERS

DEFAULT_CLUSTERS = 10


@dataclass
class Task:
    id: str
    prompt: list[dict]                    # chat messages
    responses: dict[str, str]             # response id -> text
    ai_ranking: list[list[str]] | None = None   # an AI judge's current label (tie groups)
    rewards: dict[str, list[float]] = field(default_factory=dict)   # response id -> per member


def score_responses(scorer, tasks: Sequence[Task], batch_size: int = 16) -> None:
    """Fill ``task.rewards`` with each member's reward of every response (one member for a
    single reward model; an ensemble's members separately, weighted and normalised as the
    ensemble does, for their votes; an ensemble's safety gate is not applied here)."""
    members = [(m.scorer, m.weight, m.mean, m.std) for m in getattr(scorer, "members", ())]
    if len(members) < 2:
        members = [(scorer, 1.0, 0.0, 1.0)]
    prompts, texts, keys = [], [], []
    for t in tasks:
        for rid, text in t.responses.items():
            prompts.append(t.prompt)
            texts.append(text)
            keys.append((t, rid))
    columns = [((s.score(prompts, texts, batch_size=batch_size) - mean) / std * weight).tolist()
               for s, weight, mean, std in members]
    for i, (t, rid) in enumerate(keys):
        t.rewards[rid] = [col[i] for col in columns]


def _pairs(t: Task):
    return itertools.combinations(sorted(t.rewards), 2)


def uncertainty(t: Task) -> tuple[float, float]:
    """(largest minority share of members over the task's pairs, smallest |summed margin|);
    the task with the larger minority, then the smaller margin, is the more uncertain."""
    minority, margin = 0.0, float("inf")
    for a, b in _pairs(t):
        diffs = [ra - rb for ra, rb in zip(t.rewards[a], t.rewards[b])]
        ahead = sum(d > 0 for d in diffs)
        minority = max(minority, min(ahead, len(diffs) - ahead) / len(diffs))
        margin = min(margin, abs(sum(diffs)))
    return minority, margin


def disagreement(t: Task) -> float | None:
    """The reward model's margin *against* the judge's order, the largest over the pairs the
    judge ranked apart (> 0: they disagree); None without a judge label."""
    if not t.ai_ranking:
        return None
    total = {rid: sum(r) for rid, r in t.rewards.items()}
    worst = None
    for hi, group in enumerate(t.ai_ranking):
        for lower in t.ai_ranking[hi + 1:]:
            for better in group:
                for worse in lower:
                    if better in total and worse in total:
                        against = total[worse] - total[better]
                        worst = against if worst is None else max(worst, against)
    return worst


def _tiebreak(task_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\x1f{task_id}".encode()).hexdigest()


def embed_prompts(prompts: Sequence[list[dict]], spec: str = "minilm", batch_size: int = 64,
                  max_length: int = 128) -> np.ndarray:
    """MiniLM sentence embeddings of the prompts (mean-pooled, unit length) [N, 384]."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from harness.hub import resolve

    folder = resolve(spec)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = ["\n".join(m.get("content", "") for m in p) for p in prompts]
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            # the end of a conversation says what is asked now: keep it when cutting
            tokenizer.truncation_side = "left"
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def cluster(embeddings: np.ndarray, k: int = DEFAULT_CLUSTERS, seed: int = 0) -> list[int]:
    """k-means cluster of every row (k capped at the number of rows)."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    if n == 0:
        return []
    k = max(1, min(k, n))
    return KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(embeddings).tolist()


def round_robin(groups: dict[int, list[str]]) -> list[str]:
    """One from each group in turn (groups largest first), until every group is empty."""
    lists = sorted(groups.values(), key=lambda g: -len(g))
    return [t for row in itertools.zip_longest(*lists) for t in row if t is not None]


def rank(order: str, tasks: Sequence[Task], clusters: Sequence[int] | None = None,
         seed: int = 0) -> list[str]:
    """The task ids in ``order`` (see the module docstring). ``uncertainty``, ``disagreement``
    and ``mix`` need ``score_responses`` first; ``diverse`` and ``mix`` need ``clusters``
    (one cluster number per task, from ``cluster``)."""
    if order not in ORDERS or order == "default":
        raise ValueError(f"order must be one of {', '.join(ORDERS[1:])}, not {order!r}")
    if order in NEEDS_RM and any(not t.rewards for t in tasks):
        raise ValueError(f"the {order} order needs reward-model scores (score_responses)")
    def by_uncertainty(t: Task) -> tuple:
        minority, margin = uncertainty(t)
        return -minority, margin, _tiebreak(t.id, seed)

    if order == "uncertainty":
        return [t.id for t in sorted(tasks, key=by_uncertainty)]
    if order == "disagreement":
        def key(t):
            d = disagreement(t)
            return (d is None, -(d or 0.0), _tiebreak(t.id, seed))
        return [t.id for t in sorted(tasks, key=key)]
    if clusters is None or len(clusters) != len(tasks):
        raise ValueError(f"the {order} order needs one cluster per task")
    within = by_uncertainty if order == "mix" else (lambda t: _tiebreak(t.id, seed))
    groups: dict[int, list[Task]] = {}
    for t, c in zip(tasks, clusters):
        groups.setdefault(int(c), []).append(t)
    return round_robin({c: [t.id for t in sorted(g, key=within)] for c, g in groups.items()})
