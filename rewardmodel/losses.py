"""Reward-model losses: one small function each, the formula in the docstring.

One return convention, the same as ``policy/losses.py``: every loss is returned unreduced —
one value per comparison (a pair, a ranking) or per response — so the caller can weight it by
annotator agreement and normalise it; ``reduce_weighted`` does that in one place
(``train.batch_loss`` puts a training batch together).

Notation: r_c, r_r are the scalar rewards of the chosen and rejected response, σ the logistic
function, m the margin of the label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                  margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Bradley-Terry with Llama 2's margin:  L = -log σ(r_c − r_r − m).

    Llama 2 (Touvron et al. 2023, §3.2.2, eq. 2): a pair labelled "significantly better" gets a
    larger m, so the model must separate it by more before the loss stops pushing.
    With m = 0 this is InstructGPT's pairwise loss (Ouyang et al. 2022, eq. 1).
    Shapes: r_chosen, r_rejected, margin [P] → [P].
    """
    return -F.logsigmoid(r_chosen - r_rejected - margin)


def soft_pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       soft_prob: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against an AI judge's probability p that the chosen one is better:

        L = −[ p · log σ(r_c − r_r) + (1 − p) · log σ(r_r − r_c) ]

    RLAIF (Lee et al. 2023, §2.2) trains the reward model on the judge's soft preference
    distribution instead of a hard 0/1 label. With p = 1 it is the pairwise loss with m = 0.
    Shapes: [P] → [P].
    """
    return F.binary_cross_entropy_with_logits(r_chosen - r_rejected, soft_prob, reduction="none")


def ranking_loss(rewards: torch.Tensor, ranking: list[list[int]]) -> torch.Tensor:
    """K-way rank-list loss over all C(K,2) ordered pairs of one ranking:

        L = −1/|pairs| · Σ_{(w, l): w ranked above l} log σ(r_w − r_l)

    InstructGPT (Ouyang et al. 2022, §3.5, eq. 1): the K responses of a prompt are each encoded
    once (K forward passes, not 2·C(K,2)) and the ranking counts as one example, normalised by its
    pair count. ``ranking`` holds tie groups of indices into ``rewards``, best first; responses
    in one group give no pair. Shapes: rewards [K] → scalar.
    """
    winners, losers = ranking_pairs(ranking)
    if not winners:
        return rewards.sum() * 0.0  # a ranking that is one tie group teaches nothing
    idx_w = torch.tensor(winners, device=rewards.device)
    idx_l = torch.tensor(losers, device=rewards.device)
    return pairwise_loss(rewards[idx_w], rewards[idx_l]).mean()


def ranking_pairs(ranking: list[list[int]]) -> tuple[list[int], list[int]]:
    """Every (winner, loser) index pair of a ranking of tie groups, as two aligned lists."""
    winners, losers = [], []
    for gi, group in enumerate(ranking):
        for later in ranking[gi + 1:]:
            for w in group:
                for l in later:
                    winners.append(w)
                    losers.append(l)
    return winners, losers


def centering_penalty(rewards: torch.Tensor) -> torch.Tensor:
    """Reward centering:  P_i = r_i²  for every reward (the trainer adds c · mean_i P_i).

    The Bradley-Terry loss only sees differences, so the mean reward drifts freely; a small
    coefficient times this penalty keeps scores near zero (Eisenstein et al. 2023, "Helping or
    Herding?", §3), which makes rewards from different models comparable in an ensemble.
    Shapes: rewards [N] → [N].
    """
    return rewards.pow(2)


def reduce_weighted(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·L / Σ w: examples count by their annotator agreement. Shapes: [N], [N] → scalar."""
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)
