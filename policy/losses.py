"""Policy-optimisation losses: one small class per loss, the formula in its docstring.

Shapes: B sequences, R response positions. ``mask`` is 1 on response tokens (up to and
including EOS) and 0 on padding, so every mean below is over real response tokens only.
"""
from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


class PolicyLoss(nn.Module):
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), per token:

        ρ_t = π(a_t|s_t) / π_old(a_t|s_t) = exp(log π − log π_old)
        L   = mean_t max(−A_t · ρ_t, −A_t · clip(ρ_t, 1 − ε, 1 + ε))

    The max of the two negated terms is the pessimistic bound: once the ratio has moved more
    than ε in the direction the advantage favours, the token stops contributing a gradient.
    """

    def __init__(self, clip_eps: float = 0.2):
        super().__init__()
        self.clip_eps = clip_eps

    def forward(self, logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # logprobs, old_logprobs, advantages, mask: [B, R]
        ratio = torch.exp(logprobs - old_logprobs)                                  # [B, R]
        unclipped = -advantages * ratio
        clipped = -advantages * ratio.clamp(1.0 - self.clip_eps, 1.0 + self.clip_eps)
        loss = masked_mean(torch.max(unclipped, clipped), mask)
        with torch.no_grad():
            stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
                     # Schulman's k2 estimator of KL(π_old || π): how far this epoch moved
                     "approx_kl": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask).item()}
        return loss, stats


class ValueLoss(nn.Module):
    """The critic's clipped squared error (the seed's critic_loss = 1/(2N) Σ (V − R)², with the
    value clipping of OpenAI's PPO2 baselines):

        V_clip = V_old + clip(V − V_old, −ε_v, ε_v)
        L      = ½ · mean_t max((V_t − R_t)², (V_clip,t − R_t)²)

    R are the GAE returns (advantage + old value).
    """

    def __init__(self, clip_eps: float | None = 0.2):
        super().__init__()
        self.clip_eps = clip_eps

    def forward(self, values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # values, old_values, returns, mask: [B, R]
        unclipped = (values - returns) ** 2
        if self.clip_eps is None:
            worst = unclipped
        else:
            v_clip = old_values + (values - old_values).clamp(-self.clip_eps, self.clip_eps)
            clipped = (v_clip - returns) ** 2
            worst = torch.max(unclipped, clipped)
        loss = 0.5 * masked_mean(worst, mask)
        with torch.no_grad():
            stats = {"vf_clipfrac": 0.0 if self.clip_eps is None
                     else masked_mean((clipped > unclipped).float(), mask).item()}
        return loss, stats


class ReinforceLoss(nn.Module):
    """REINFORCE with the whole response as one action (RLOO, Ahmadian et al. 2024, eq. 3-4):

        log π(y|x) = Σ_t log π(y_t | x, y_<t)
        L          = −mean_i A_i · log π(y_i | x_i)

    A_i is one number per response (the leave-one-out advantage), so every token of a response
    is pushed in the same direction by the same amount.
    """

    def forward(self, logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        # logprobs, mask: [B, R]; advantages: [B]
        seq_logprob = (logprobs * mask).sum(-1)                                      # [B]
        return -(advantages * seq_logprob).mean()
