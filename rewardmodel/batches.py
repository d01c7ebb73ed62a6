"""Training examples for the reward model: comparisons, the held-out split, length-bucketed batches.

A *comparison* is one prompt with K ≥ 2 responses and a ranking of them (tie groups, best
first). A labelled pair is a comparison with K = 2; a K-way ranking task is one comparison whose
K responses are encoded once per step (InstructGPT's trick). Every response of a batch goes
through the model in ONE forward pass (chosen and rejected side by side), padded only to the
longest sequence of its batch; batches are cut from length-sorted chunks so that sequences
of similar length share a batch (little padding), and the batch order is then shuffled.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

import torch

from annotate.trainingdata import TrainingData

from .losses import ranking_pairs

BUCKET_BATCHES = 50  # batches per length-sorted chunk: similar lengths, still well shuffled


@dataclass
class Comparison:
    prompt: list[dict]
    responses: list[str]
    ranking: list[list[int]]            # tie groups of indices into responses, best first
    margin: float = 0.0                 # pairs only: Llama-2 margin m
    soft_prob: float | None = None      # pairs only: p(responses[ranking[0][0]] preferred)
    weight: float = 1.0                 # annotator agreement
    margin_level: str | None = None
    tokens: list = field(default_factory=list, repr=False)  # model.Encoded per response

    @property
    def is_pair(self) -> bool:
        return len(self.responses) == 2

    @property
    def length(self) -> int:
        return max(len(e.ids) for e in self.tokens)


def comparisons_from(data: TrainingData, *, use_margin: bool = True,
                     margin_values: dict[str, float] | None = None, soft_labels: bool = True,
                     use_rankings: bool = True) -> list[Comparison]:
    """Pairs and rankings of ``data`` as comparisons.

    With ``use_rankings`` a K-way task trains through its rankings, so its pairs (also listed
    in ``data.pairs``) are left out rather than counted twice. ``margin_values`` maps a margin
    level to m (default: the store's numeric margin of the pair).
    """
    ranked_tasks = {r.task_id for r in data.rankings if r.task_id} if use_rankings else set()
    out = []
    for p in data.pairs:
        if p.task_id is not None and p.task_id in ranked_tasks:
            continue
        if not use_margin:
            margin = 0.0
        elif margin_values is not None:
            margin = float(margin_values.get(p.margin_level or "", 0.0))
        else:
            margin = float(p.margin or 0.0)
        soft = p.soft_prob if soft_labels and p.soft_prob is not None else None
        out.append(Comparison(prompt=list(p.prompt), responses=[p.chosen, p.rejected],
                              ranking=[[0], [1]], margin=margin, soft_prob=soft,
                              weight=float(p.weight), margin_level=p.margin_level))
    if use_rankings:
        for r in data.rankings:
            if ranking_pairs(r.ranking)[0]:
                out.append(Comparison(prompt=list(r.prompt), responses=list(r.responses),
                                      ranking=[list(g) for g in r.ranking], weight=float(r.weight)))
    return out


def prompt_key(prompt: Sequence[dict]) -> str:
    return hashlib.sha256(json.dumps(list(prompt), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def split_holdout(comparisons: list[Comparison], fraction: float, seed: int = 0
                  ) -> tuple[list[Comparison], list[Comparison]]:
    """(train, held out): a prompt goes wholly to one side, chosen by a hash of the prompt and
    the seed, so the split is the same on every process and every rerun."""
    if fraction <= 0 or len(comparisons) < 2:
        return comparisons, []
    train, held = [], []
    for c in comparisons:
        h = int(hashlib.sha256(f"{seed}:{prompt_key(c.prompt)}".encode()).hexdigest()[:8], 16)
        (held if h / 0xFFFFFFFF < fraction else train).append(c)
    if not train:
        return held, []
    return train, held


def encode_all(model, comparisons: list[Comparison]) -> None:
    """Tokenise every response of every comparison once, in one tokenizer call."""
    prompts = [c.prompt for c in comparisons for _ in c.responses]
    responses = [r for c in comparisons for r in c.responses]
    encoded = model.encode(prompts, responses)
    i = 0
    for c in comparisons:
        c.tokens = encoded[i:i + len(c.responses)]
        i += len(c.responses)


def epoch_batches(lengths: Sequence[int], batch_size: int, epoch: int, seed: int,
                  bucket: bool = True) -> list[list[int]]:
    """One epoch of batches (lists of comparison indices), deterministic in (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    shuffle = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in shuffle]


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]     # every response of the batch: [N, T]
    comparisons: list[Comparison]
    offsets: list[int]                  # index of each comparison's first response in inputs

    @property
    def size(self) -> int:
        return len(self.comparisons)


def collate(model, comparisons: list[Comparison], share_prompt: bool = True) -> Batch:
    """One forward pass for every response of the batch. Decoders (with ``share_prompt``) pack
    the responses of a comparison behind one copy of their prompt (see
    ``RewardModel.collate_shared_prompt``); encoders see the prompt with each response."""
    offsets, n = [], 0
    for c in comparisons:
        offsets.append(n)
        n += len(c.responses)
    if share_prompt and model.kind == "decoder":
        inputs = model.collate_shared_prompt([c.tokens for c in comparisons])
    else:
        inputs = model.collate([e for c in comparisons for e in c.tokens])
    return Batch(inputs=inputs, comparisons=comparisons, offsets=offsets)
