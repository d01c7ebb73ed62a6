"""Reward-model losses against values computed by hand."""
import math

import pytest
import torch

from rewardmodel import batches as B
from rewardmodel.losses import (centering_penalty, pairwise_loss, ranking_loss, ranking_pairs,
                                reduce_weighted, soft_pairwise_loss)
from rewardmodel.train import batch_loss


def nll_sigmoid(x: float) -> float:
    """-log σ(x) = log(1 + e^-x), written out by hand."""
    return math.log(1 + math.exp(-x))


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_pairwise_loss_without_margin_is_bradley_terry():
    assert pairwise_loss(t(2.0), t(1.0)).item() == pytest.approx(0.3132617, abs=1e-6)
    assert pairwise_loss(t(0.0), t(0.0)).item() == pytest.approx(math.log(2), abs=1e-9)


def test_margin_is_subtracted_from_the_reward_gap():
    # r_c - r_r = 1; margin 1 ("significantly") leaves a gap of 0: -log σ(0) = log 2
    assert pairwise_loss(t(2.0), t(1.0), 1.0).item() == pytest.approx(math.log(2), abs=1e-9)
    # margin 1/3 ("slightly"): -log σ(2/3) = log(1 + e^(-2/3)) = 0.41437...
    assert pairwise_loss(t(2.0), t(1.0), 1 / 3).item() == pytest.approx(0.4143701, abs=1e-6)
    # a larger margin always costs more for the same rewards
    losses = pairwise_loss(t(2.0, 2.0, 2.0), t(1.0, 1.0, 1.0), t(0.0, 1 / 3, 1.0))
    assert losses[0] < losses[1] < losses[2]


def test_soft_bce_matches_hand_value_and_reduces_to_pairwise_at_p1():
    # p = 0.7, r_c - r_r = 0.5: -(0.7 log σ(0.5) + 0.3 log σ(-0.5)) = 0.624077
    assert soft_pairwise_loss(t(1.5), t(1.0), t(0.7)).item() == pytest.approx(0.6240770, abs=1e-6)
    assert soft_pairwise_loss(t(1.5), t(1.0), t(1.0)).item() == pytest.approx(
        pairwise_loss(t(1.5), t(1.0)).item(), abs=1e-9)
    # p = 0.5 is minimised at equal rewards
    assert soft_pairwise_loss(t(0.3), t(0.3), t(0.5)).item() == pytest.approx(math.log(2), abs=1e-9)


def test_ranking_loss_is_the_mean_of_its_pairwise_losses():
    rewards = t(3.0, 1.0, 2.0)           # ranking: 0 > 2 > 1
    expected = (nll_sigmoid(3 - 2) + nll_sigmoid(3 - 1) + nll_sigmoid(2 - 1)) / 3
    assert ranking_loss(rewards, [[0], [2], [1]]).item() == pytest.approx(expected, abs=1e-9)
    assert ranking_loss(rewards, [[0], [2], [1]]).item() == pytest.approx(
        pairwise_loss(t(3.0, 3.0, 2.0), t(2.0, 1.0, 1.0)).mean().item(), abs=1e-12)


def test_ranking_ties_give_no_pair():
    assert ranking_pairs([[0], [1, 2], [3]]) == ([0, 0, 0, 1, 2], [1, 2, 3, 3, 3])
    rewards = t(1.0, 0.0, 5.0)
    expected = (nll_sigmoid(1 - 0) + nll_sigmoid(1 - 5)) / 2
    assert ranking_loss(rewards, [[0], [1, 2]]).item() == pytest.approx(expected, abs=1e-9)
    assert ranking_loss(rewards, [[0, 1, 2]]).item() == 0.0


def test_centering_and_weighting():
    assert centering_penalty(t(1.0, -2.0, 3.0)).tolist() == pytest.approx([1.0, 4.0, 9.0])
    assert reduce_weighted(t(1.0, 3.0), t(1.0, 3.0)).item() == pytest.approx(2.5)
    assert reduce_weighted(t(1.0, 3.0), t(0.5, 0.5)).item() == pytest.approx(2.0)


def test_batch_loss_combines_margin_soft_ranking_weights_and_centering():
    cmp = [
        B.Comparison(prompt=[], responses=["a", "b"], ranking=[[0], [1]], margin=1 / 3, weight=1.0),
        B.Comparison(prompt=[], responses=["c", "d"], ranking=[[0], [1]], soft_prob=0.7, weight=0.5),
        B.Comparison(prompt=[], responses=["e", "f", "g"], ranking=[[2], [0], [1]], weight=1.0),
    ]
    batch = B.Batch(inputs={}, comparisons=cmp, offsets=[0, 2, 4])
    rewards = torch.tensor([2.0, 1.0, 1.5, 1.0, 1.0, 0.0, 3.0], requires_grad=True)
    loss, stats = batch_loss(rewards, batch, center_coef=0.1)
    l_margin = nll_sigmoid(2 / 3)
    l_soft = 0.6240770
    l_rank = (nll_sigmoid(3 - 1) + nll_sigmoid(3 - 0) + nll_sigmoid(1 - 0)) / 3
    center = (4 + 1 + 2.25 + 1 + 1 + 0 + 9) / 7
    expected = (1.0 * l_margin + 0.5 * l_soft + 1.0 * l_rank) / 2.5 + 0.1 * center
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["accuracy"].item() == pytest.approx(5 / 5)
    loss.backward()
    # d/dr5 (worst of the ranking, r = 0 so centering adds nothing): it loses two pairs, each pulling σ(−gap)
    assert rewards.grad[5].item() == pytest.approx(
        (1 / (1 + math.exp(3)) + 1 / (1 + math.exp(1))) / 3 / 2.5, abs=1e-6)
