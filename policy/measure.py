"""How good is a policy right now: sampled reward, KL to the reference, response length.

Used by the trainers for their before/after numbers (RS per round, DPO at the end) and by
tests; ``prefstudio eval policy`` builds its report on the same two functions.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .generate import Rollout, SamplingParams, sample
from .lm import reference, response_logprobs
from .rewards import RewardFn, score_in_batches


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
def sample_responses(model, tok, prompts: Sequence[Sequence[dict]], params: SamplingParams,
                     k: int = 1, batch_size: int = 16) -> list[dict]:
    """K sampled responses per prompt with their KL to the reference, in prompt order:
    ``[{"prompt_index", "text", "finished", "tokens", "kl"}]`` (k rows per prompt)."""
    was_training = model.training
    model.eval()
    if params.seed is not None:
        torch.manual_seed(params.seed)
    jobs = [i for i in range(len(prompts)) for _ in range(k)]
    rows = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        roll = sample(model, tok, [list(prompts[i]) for i in chunk], params)
        kl = rollout_kl(model, roll).tolist()
        tokens = roll.response_mask.sum(-1).tolist()
        rows += [{"prompt_index": i, "text": text, "finished": done, "tokens": int(n), "kl": d}
                 for i, text, done, n, d in zip(chunk, roll.texts, roll.finished, tokens, kl)]
    model.train(was_training)
    return rows


def measure_policy(model, tok, prompts: Sequence[Sequence[dict]], reward_fn: RewardFn,
                   params: SamplingParams, batch_size: int = 16) -> dict:
    """Mean reward, KL to the reference, response tokens and finished fraction over one
    sampled response per prompt."""
    rows = sample_responses(model, tok, prompts, params, k=1, batch_size=batch_size)
    rewards = score_in_batches(reward_fn, [prompts[r["prompt_index"]] for r in rows],
                               [r["text"] for r in rows], batch_size)
    n = max(len(rows), 1)
    return {"reward": rewards.mean().item(), "kl": sum(r["kl"] for r in rows) / n,
            "length": sum(r["tokens"] for r in rows) / n,
            "finished": sum(r["finished"] for r in rows) / n}
