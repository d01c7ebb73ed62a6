"""How good is a policy right now: sampled reward, KL to the reference, response length.

Used by the trainers for their before/after numbers (RS per round, DPO at the end) and by
tests; ``prefstudio eval policy`` builds its report on the same two functions.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .generate import Rollout, SamplingParams, sample
from .lm import reference, response_logprobs
from .rewards import RewardFn


@torch.no_grad()
def rollout_kl(model, roll: Rollout) -> torch.Tensor:
    """Sequence KL estimate Σ_t (log π(y_t) − log π_ref(y_t)) over each sampled response: [B].

    The responses were sampled from π, so the mean over a batch estimates KL(π ‖ π_ref)
    (the k1 estimator; Schulman, "Approximating KL divergence", 2020).
    """
    mask = roll.response_mask[:, roll.prompt_len:].float()                          # [B, R]
    logp = response_logprobs(model, roll.input_ids, roll.attention_mask, roll.prompt_len)
    with reference(model):
        ref = response_logprobs(model, roll.input_ids, roll.attention_mask, roll.prompt_len)
    return ((logp - ref) * mask).sum(-1)


@torch.no_grad()
def measure_policy(model, tok, prompts: Sequence[Sequence[dict]], reward_fn: RewardFn,
                   params: SamplingParams, batch_size: int = 16) -> dict:
    """Mean reward, KL to the reference, response tokens and finished fraction over one
    sampled response per prompt."""
    was_training = model.training
    model.eval()
    if params.seed is not None:
        torch.manual_seed(params.seed)
    rewards, kls, lengths, finished = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start:start + batch_size]]
        roll = sample(model, tok, chunk, params)
        rewards.append(reward_fn(chunk, roll.texts).float().cpu())
        kls.append(rollout_kl(model, roll).cpu())
        lengths.append(roll.response_mask.sum(-1).float().cpu())
        finished += roll.finished
    model.train(was_training)
    return {"reward": torch.cat(rewards).mean().item(), "kl": torch.cat(kls).mean().item(),
            "length": torch.cat(lengths).mean().item(),
            "finished": sum(finished) / max(len(finished), 1)}
