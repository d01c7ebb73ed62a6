"""Hand-computed checks of the PPO / RLOO math (policy.losses, policy.advantages).

Every expected number below was worked out on paper; the comments show the arithmetic.
"""
import math

import pytest
import torch

from policy.advantages import (AdaptiveKLController, RunningMoments, ScoreShaper, ScoreShaping,
                               gae, kl_penalized_rewards, rloo_advantages, whiten)
from policy.losses import clipped_value_loss, masked_mean, ppo_clip_loss, reinforce_loss


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32),
                               torch.as_tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


def test_per_token_reward_is_minus_beta_kl_with_score_on_last_token():
    # row 0: 3 response tokens; row 1: 2 tokens then padding
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -0.7, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).float()
    rewards, kl = kl_penalized_rewards(torch.tensor([2.0, -1.0]), logprobs, ref, mask, beta=0.1)
    # row 0: kl = [0.5, -1.0, 0.0] → −0.1·kl = [-0.05, 0.1, 0.0], +2 on the 3rd token
    # row 1: kl = [-0.2, 0.0, (pad)] → [0.02, 0.0], −1 on the 2nd token, padding stays 0
    close(kl, [[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]])
    close(rewards, [[-0.05, 0.1, 2.0], [0.02, -1.0, 0.0]])


def test_gae_with_gamma_lambda_one_is_the_seeds_return_minus_value():
    # seed 000: return[i] = Σ_{j≥i} reward[j], a[i] = return[i] − old_values[i]
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    close(ret, [[0.9, 0.8, 1.0, 1.0]])
    close(adv, [[0.4, 0.4, 0.7, 0.8]])


def test_gae_four_steps_by_hand():
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2, 7.0]])          # position 4 is padding
    mask = torch.tensor([[1, 1, 1, 1, 0]]).float()
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # δ3 = 1.0 + 0.9·0 − 0.2 = 0.8              A3 = 0.8
    # δ2 = 0.0 + 0.9·0.2 − 0.3 = −0.12          A2 = −0.12 + 0.72·0.8 = 0.456
    # δ1 = −0.2 + 0.9·0.3 − 0.4 = −0.33         A1 = −0.33 + 0.72·0.456 = −0.00168
    # δ0 = 0.1 + 0.9·0.4 − 0.5 = −0.04          A0 = −0.04 + 0.72·(−0.00168) = −0.0412096
    close(adv, [[-0.0412096, -0.00168, 0.456, 0.8, 0.0]])
    close(ret, [[0.4587904, 0.39832, 0.756, 1.0, 0.0]])


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    out = whiten(x, torch.tensor([[1.0, 1.0, 0.0]]))
    close(out, [[-1.0, 1.0, 0.0]], tol=1e-4)       # mean 2, std 1 over the two real tokens


def test_policy_loss_clips_by_hand():
    advantages = torch.tensor([[1.0, -1.0, 2.0, -0.5]])
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.9, 1.1]])).requires_grad_()
    tokens = ppo_clip_loss(new, old, advantages, clip_eps=0.2)             # [1, 4]
    loss = masked_mean(tokens, torch.ones(1, 4))
    # t0: A=1,  ρ=1.5: max(−1.5, −1.2) = −1.2 (clipped)
    # t1: A=−1, ρ=0.5: max(0.5, 0.8)   = 0.8  (clipped)
    # t2: A=2,  ρ=0.9: max(−1.8, −1.8) = −1.8
    # t3: A=−.5,ρ=1.1: max(0.55, 0.55) = 0.55
    close(loss, (-1.2 + 0.8 - 1.8 + 0.55) / 4)
    close(tokens, [[-1.2, 0.8, -1.8, 0.55]])
    loss.backward()
    # clipped tokens get no gradient; the others d(−Aρ)/dlogρ = −Aρ, over 4 tokens
    close(new.grad, [[0.0, 0.0, -1.8 / 4, 0.55 / 4]])


def test_policy_loss_padding_does_not_count():
    tokens = ppo_clip_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 99.0]]))
    loss = masked_mean(tokens, torch.tensor([[1.0, 1.0, 0.0]]))
    close(loss, -1.5)                              # ρ = 1: −mean(A) over the 2 real tokens


def test_value_loss_clips_by_hand():
    values = torch.tensor([[1.0, 0.0, 2.0]])
    old = torch.tensor([[0.5, 0.5, 1.5]])
    returns = torch.tensor([[2.0, 1.0, 1.0]])
    tokens = clipped_value_loss(values, old, returns, clip_eps=0.2)
    loss = masked_mean(tokens, torch.ones(1, 3))
    # t0: V_clip = 0.7: max((1−2)², (0.7−2)²) = max(1, 1.69) = 1.69
    # t1: V_clip = 0.3: max((0−1)², (0.3−1)²) = max(1, 0.49) = 1
    # t2: V_clip = 1.7: max((2−1)², (1.7−1)²) = max(1, 0.49) = 1
    close(loss, 0.5 * (1.69 + 1 + 1) / 3)
    close(tokens, [[0.5 * 1.69, 0.5, 0.5]])       # t0 clipped, the others not
    unclipped = masked_mean(clipped_value_loss(values, old, returns, clip_eps=None), torch.ones(1, 3))
    close(unclipped, 0.5 * 3 / 3)                  # the seed's 1/(2N) Σ (V − R)²


def test_seed_rloo_example_vectorised_equals_loop():
    # seed 003: 3 prompts, k = 4 completions each, laid out completion-major
    k, n_prompts = 4, 3
    flat = torch.tensor([1, 2, 3, 2, 3, 4, 5, 6, 7, 8, 9, 10]).float()
    loop = torch.zeros_like(flat)
    for i in range(0, len(flat), n_prompts):
        others = [flat[j:j + n_prompts] for j in range(0, len(flat), n_prompts) if j != i]
        loop[i:i + n_prompts] = flat[i:i + n_prompts] - torch.stack(others).mean(0)
    assert loop[0].item() == pytest.approx(1 - (2 + 5 + 8) / 3)
    assert loop[7].item() == pytest.approx(6 - (3 + 2 + 9) / 3)
    # ours takes [prompts, k]
    ours = rloo_advantages(flat.reshape(k, n_prompts).T)                   # [3, 4]
    close(ours.T.flatten(), loop)
    close(ours.sum(-1), torch.zeros(3))            # a leave-one-out advantage sums to 0 per prompt


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(3, 1))


def test_reinforce_loss_whole_response_is_one_action():
    # seed 003's example tokens: Σ log π = −12.3 − 8.3 − 2.3 = −22.9, one advantage per response
    logprobs = torch.tensor([[-12.3, -8.3, -2.3], [-1.0, -2.0, -50.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).float()
    per_response = reinforce_loss(logprobs, torch.tensor([-1.1, 0.5]), mask)   # [2]
    close(per_response, [-(-1.1) * (-22.9), -0.5 * (-3.0)])
    loss = per_response.mean()
    close(loss, -((-1.1) * (-22.9) + 0.5 * (-3.0)) / 2)
    loss.backward()
    close(logprobs.grad, [[0.55, 0.55, 0.55], [-0.25, -0.25, 0.0]])


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(beta=0.1, target=6.0, horizon=10_000)
    ctl.update(kl=9.0, n_samples=256)              # e = clip(9/6 − 1) = 0.2
    assert ctl.beta == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    ctl.update(kl=5.4, n_samples=100)              # e = −0.1
    assert ctl.beta == pytest.approx(0.1 * 1.00512 * (1 - 0.1 * 100 / 10_000))


def test_running_moments_match_the_whole_sample():
    torch.manual_seed(0)
    x = torch.randn(37) * 3 + 2
    m = RunningMoments()
    for chunk in x.split(10):
        m.update(chunk)
    assert m.mean == pytest.approx(x.double().mean().item())
    assert m.std == pytest.approx(x.double().std(unbiased=False).item())


def test_score_shaper_normalises_clips_and_penalises_unfinished():
    shaper = ScoreShaper(ScoreShaping(normalize=True, clip=1.5, missing_eos_penalty=1.0))
    out = shaper(torch.tensor([0.0, 2.0, 4.0, 10.0]), torch.tensor([True, True, False, True]))
    mean, std = 4.0, math.sqrt((16 + 4 + 0 + 36) / 4)
    expected = [max(-1.5, (0 - mean) / std), (2 - mean) / std, 0.0 - 1.0, 1.5]
    close(out, expected, tol=1e-5)


def test_masked_mean_along_dim():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    close(masked_mean(x, torch.tensor([[1, 1, 0], [1, 0, 0]]), dim=-1), [1.5, 4.0])
