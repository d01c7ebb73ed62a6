"""From reward-model scores to advantages: the pieces PPO and RLOO share.

    score ─shape (normalise, clip, no-EOS penalty)─▶ per-token reward (− β·KL, + score at the end)
          ─GAE(γ, λ) with the critic─▶ advantages, returns          (PPO)
          ─sum over tokens, leave-one-out baseline─▶ advantages     (RLOO)

Shapes: B sequences, R response positions; ``mask`` [B, R] is 1 on the response tokens
(a contiguous run from position 0, ending at EOS or at the length limit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .losses import masked_mean


def kl_penalized_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward of seed 000 / Ziegler et al. 2019 (eq. 2):

        r_t = −β · (log π_old(y_t) − log π_ref(y_t))            for every response token
        r_T += score                                             at the last response token T

    scores: [B]; logprobs, ref_logprobs, mask: [B, R]  →  rewards [B, R], kl [B, R]
    """
    kl = (logprobs - ref_logprobs) * mask                                         # [B, R]
    rewards = -beta * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)                                 # [B]
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16):

        δ_t = r_t + γ·V_{t+1} − V_t          (V after the last response token is 0)
        A_t = δ_t + γλ·A_{t+1}
        R_t = A_t + V_t                      (the critic's regression target)

    With γ = λ = 1 this is the seed's advantage: A_t = Σ_{j≥t} r_j − V_t.
    rewards, values, mask: [B, R]  →  advantages [B, R], returns [B, R] (0 on padding)
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked elements; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline (Kool et al. 2019; RLOO, Ahmadian et al. 2024, seed 003):

        b_i = (Σ_j r_j − r_i) / (k − 1)          A_i = r_i − b_i

    rewards: [B, k], the k sampled responses of each prompt in a row  →  advantages [B, k]
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs k >= 2 samples per prompt")
    baseline = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


# --- KL coefficient ------------------------------------------------------------------------------

class FixedKLController:
    """β stays where it was set."""

    def __init__(self, beta: float):
        self.beta = beta

    def update(self, kl: float, n_samples: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = state["beta"]


class AdaptiveKLController(FixedKLController):
    """Proportional controller of Ziegler et al. 2019 (§2.2) steering the KL towards a target:

        e     = clip(KL / KL_target − 1, −0.2, 0.2)
        β    ← β · (1 + e · n / horizon)          n = samples in this batch
    """

    def __init__(self, beta: float, target: float, horizon: int = 10_000):
        super().__init__(beta)
        self.target, self.horizon = target, horizon

    def update(self, kl: float, n_samples: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_samples / self.horizon


# --- score shaping ---------------------------------------------------------------------------------

class RunningMoments:
    """Running mean and variance over every score seen (Chan et al.'s parallel update)."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        if n == 0:
            return
        batch_mean = x.double().mean().item()
        batch_var = x.double().var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


@dataclass
class ScoreShaping:
    normalize: bool = True            # (score − running mean) / running std over all scores so far
    clip: float | None = 5.0          # then clip to [−clip, clip]
    missing_eos_penalty: float = 1.0  # then subtract this from responses that never ended


class ScoreShaper:
    """Reward-model score → the score PPO/RLOO optimise.

    Normalising with running statistics keeps β and the critic's scale meaningful whatever the
    reward model's units are; clipping bounds the damage of an outlier score; the penalty stops
    the policy from learning to ramble until the length limit (where the score is unreliable).
    """

    def __init__(self, settings: ScoreShaping):
        self.settings = settings
        self.moments = RunningMoments()

    def __call__(self, scores: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        s = self.settings
        scores = scores.float()
        if s.normalize:
            self.moments.update(scores)
            scores = (scores - self.moments.mean) / (self.moments.std + 1e-8)
        if s.clip is not None:
            scores = scores.clamp(-s.clip, s.clip)
        return scores - s.missing_eos_penalty * (~finished.bool()).float()
