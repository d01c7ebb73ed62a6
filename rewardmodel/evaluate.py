"""Held-out evaluation of a reward model (or ensemble) on preference pairs.

    accuracy             fraction of pairs with r(chosen) > r(rejected)
    accuracy_by_margin   the same per margin level of the label (Llama 2, Table 8: a reward
                         model should be most accurate where annotators were most certain)
    calibration_error    expected calibration error of p = σ(r_c − r_r) as the model's
                         probability that the chosen response wins (10 equal-width bins of the
                         top-label confidence max(p, 1 − p); Guo et al. 2017)
    plot                 PNG: histograms of chosen vs rejected rewards + reliability diagram
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch

from annotate.trainingdata import PairExample, TrainingData

from . import batches as B
from .losses import pairwise_loss, ranking_pairs

NO_LEVEL = "none"


def evaluate(scorer, data: TrainingData | Sequence[PairExample], *, batch_size: int = 16,
             plot: str | Path | None = None, bins: int = 10) -> dict:
    pairs = list(data.pairs if isinstance(data, TrainingData) else data)
    if not pairs:
        raise ValueError("no pairs to evaluate")
    r_chosen, r_rejected = score_pairs(scorer, pairs, batch_size=batch_size)
    gap = r_chosen - r_rejected                      # [P]
    correct = gap > 0
    by_level: dict[str, list[bool]] = defaultdict(list)
    for p, ok in zip(pairs, correct.tolist()):
        by_level[p.margin_level or NO_LEVEL].append(ok)
    result = {
        "accuracy": correct.float().mean().item(),
        "n": len(pairs),
        "accuracy_by_margin": {lvl: sum(v) / len(v) for lvl, v in sorted(by_level.items())},
        "n_by_margin": {lvl: len(v) for lvl, v in sorted(by_level.items())},
        "calibration_error": calibration_error(torch.sigmoid(gap), bins),
        "mean_gap": gap.mean().item(),
        "reward_chosen_mean": r_chosen.mean().item(),
        "reward_rejected_mean": r_rejected.mean().item(),
    }
    if plot is not None:
        result["plot"] = str(plot_rewards(r_chosen, r_rejected, plot, result, bins))
    return result


def score_pairs(scorer, pairs: Sequence[PairExample], *, batch_size: int = 16
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of chosen and rejected; a (prompt, response) shared by several pairs (the pairs
    of one ranking) is scored once."""
    index: dict[tuple[str, str], int] = {}
    prompts, responses = [], []
    for p in pairs:
        for text in (p.chosen, p.rejected):
            key = (json.dumps(p.prompt, sort_keys=True, ensure_ascii=False), text)
            if key not in index:
                index[key] = len(responses)
                prompts.append(p.prompt)
                responses.append(text)
    rewards = scorer.score(prompts, responses, batch_size=batch_size).float()
    key = lambda p, t: index[(json.dumps(p.prompt, sort_keys=True, ensure_ascii=False), t)]
    chosen = torch.tensor([key(p, p.chosen) for p in pairs])
    rejected = torch.tensor([key(p, p.rejected) for p in pairs])
    return rewards[chosen], rewards[rejected]


def calibration_error(p_chosen: torch.Tensor, bins: int = 10) -> float:
    """ECE = Σ_b |B_b|/n · |accuracy(B_b) − confidence(B_b)| over bins of max(p, 1 − p).

    The model predicts "chosen wins" when p > 0.5, with confidence max(p, 1 − p) ∈ [0.5, 1];
    the label says chosen always wins, so a prediction is correct when p > 0.5.
    """
    confidence = torch.maximum(p_chosen, 1 - p_chosen)        # [P]
    correct = (p_chosen > 0.5).float()                         # [P]
    edges = torch.linspace(0.5, 1.0, bins + 1)
    which = torch.bucketize(confidence, edges[1:-1], right=True)  # bin index 0..bins-1
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.float().mean().item() * abs(correct[in_bin].mean().item()
                                                       - confidence[in_bin].mean().item())
    return ece


def plot_rewards(r_chosen: torch.Tensor, r_rejected: torch.Tensor, path: str | Path,
                 result: dict, bins: int = 10) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    lo = min(r_chosen.min().item(), r_rejected.min().item())
    hi = max(r_chosen.max().item(), r_rejected.max().item())
    edges = torch.linspace(lo, hi if hi > lo else lo + 1, 31).tolist()
    ax1.hist(r_chosen.tolist(), bins=edges, alpha=0.6, label="chosen", color="tab:green")
    ax1.hist(r_rejected.tolist(), bins=edges, alpha=0.6, label="rejected", color="tab:red")
    ax1.set_xlabel("reward")
    ax1.set_ylabel("responses")
    ax1.set_title(f"accuracy {result['accuracy']:.3f} (n={result['n']})")
    ax1.legend()

    p = torch.sigmoid(r_chosen - r_rejected)
    conf = torch.maximum(p, 1 - p)
    correct = (p > 0.5).float()
    edges = torch.linspace(0.5, 1.0, bins + 1)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    xs, ys = [], []
    for b in range(bins):
        if (which == b).any():
            xs.append(conf[which == b].mean().item())
            ys.append(correct[which == b].mean().item())
    ax2.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax2.plot(xs, ys, "o-", label="model")
    ax2.set_xlabel("confidence max(σ(r_c − r_r), 1 − σ(r_c − r_r))")
    ax2.set_ylabel("accuracy")
    ax2.set_title(f"calibration error {result['calibration_error']:.3f}")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.inference_mode()
def evaluate_comparisons(model, comparisons: list[B.Comparison], batch_size: int,
                         share_prompt: bool = True) -> torch.Tensor:
    """Sums over the comparisons: [pairs, correct, -log σ(r_w − r_l), responses, Σr, Σr²].

    The last three give the reward's mean and spread, kept with the model so that an ensemble
    can put members of different scales on one (score.py, ``"normalize"``). Without gradients:
    during training no autograd graph (twice a training batch's activations) is kept.
    """
    totals = torch.zeros(6, dtype=torch.float64)
    order = sorted(range(len(comparisons)), key=lambda i: comparisons[i].length)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        batch = B.collate(model, [comparisons[i] for i in order[start:start + batch_size]],
                          share_prompt)
        rewards = model(**{k: v.to(model.device) for k, v in batch.inputs.items()}).cpu()
        r = rewards.double()
        totals[3:] += torch.stack([torch.tensor(float(len(r))), r.sum(), (r * r).sum()])
        for c, off in zip(batch.comparisons, batch.offsets):
            w, l = ranking_pairs(c.ranking)
            diff = rewards[[off + i for i in w]] - rewards[[off + i for i in l]]
            totals[:3] += torch.stack([torch.tensor(float(len(w))), (diff > 0).double().sum(),
                                       pairwise_loss(diff, torch.zeros_like(diff)).double().sum()])
    model.train(was_training)
    return totals
