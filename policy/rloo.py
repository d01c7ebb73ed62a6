"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024; seed 003).

Each step:
  1. sample    k responses for each of B prompts, in one batched generate call.
  2. reward    per response, the whole response is one action:
                   r_i = shaped score_i − β · Σ_t (log π(y_t) − log π_ref(y_t))
  3. baseline  b_i = (Σ_j r_j − r_i) / (k − 1) over the other samples of the same prompt,
               A_i = r_i − b_i (no critic: the other samples are the value estimate).
  4. learn     one REINFORCE step: loss = −mean_i A_i · Σ_t log π(y_i,t).

Compared with PPO there is no value head and no old-log-prob pass: the policy's log-probs
come from the one forward pass that also carries the gradient (the update is on-policy, so
π_old = π at that moment), and one optimiser step per batch replaces PPO's 4 epochs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .advantages import rloo_advantages
from .generate import sample
from .losses import reinforce_loss
from .rewards import RewardFn
from .rl_common import OnlineRun, OnlineSettings, trim


@dataclass
class RLOOConfig(OnlineSettings):
    batch_size: int = 4               # prompts per micro-batch (× k responses) and process
    k: int = 4                        # samples per prompt (the paper's best: k = 4)
    # grad_accum: micro-batches per optimiser step (each sampled, scored and back-propagated)

    def check(self) -> None:
        super().check()
        if self.k < 2:
            raise ValueError("RLOO needs k >= 2 samples per prompt")


def rloo_loss(online: OnlineRun, prompts: list[list[dict]], reward_fn: RewardFn,
              k: int) -> tuple[torch.Tensor, dict]:
    """Sample k per prompt, score, and return the REINFORCE loss with the leave-one-out
    baseline for this micro-batch (to back-propagate) and its stats."""
    repeated = [p for p in prompts for _ in range(k)]            # rows i·k … i·k+k−1: prompt i
    roll = sample(online.ac.policy, online.tok, repeated, online.cfg.sampling)
    raw = reward_fn(repeated, roll.texts).float().cpu()                          # [B·k]
    finished = torch.tensor(roll.finished)
    device = next(online.ac.parameters()).device
    response_mask = roll.response_mask[:, roll.prompt_len:].to(device)
    ids, att, P, cols = trim(roll.input_ids.to(device), roll.attention_mask.to(device),
                             roll.prompt_len, response_mask)
    mask = response_mask[:, cols].float()                                        # [B·k, R]
    logprobs, _ = online.run.model(ids, att, P)                                  # [B·k, R]
    ref = online.ac.reference_logprobs(ids, att, P)
    kl = ((logprobs.detach() - ref) * mask).sum(-1)                              # [B·k]
    reward = online.shaper(raw, finished).to(kl.device) - online.kl_ctl.beta * kl
    advantages = rloo_advantages(reward.view(-1, k)).view(-1)                    # [B·k]
    loss = reinforce_loss(logprobs, advantages, mask).mean()
    return loss, {"reward": raw.mean().item(), "kl": kl.mean().item(),
                  "advantage_abs": advantages.abs().mean().item(),
                  "response_len": mask.sum(-1).mean().item(),
                  "finished": finished.float().mean().item(), "n_samples": len(repeated)}


def train_rloo(cfg: RLOOConfig, prompts: Sequence[list[dict]], reward_fn: RewardFn,
               out_dir: str | Path, *, parents: Sequence[str] = ()) -> Path:
    """Optimise a LoRA policy with RLOO; writes a run folder (RunLog, checkpoint, adapter)."""
    if not prompts:
        raise ValueError("no prompts to train on")
    online = OnlineRun("rloo", cfg, out_dir, reward_fn=reward_fn, value_head=False, parents=parents)
    online.run.log.log(f"rloo: {len(prompts)} prompts, k={cfg.k}")
    with online.run:
        batches = online.prompt_batches(prompts)
        while not online.run.done:
            beta = online.kl_ctl.beta
            parts = []
            for batch in online.run.accumulate(batches):
                loss, stats = rloo_loss(online, batch, reward_fn, cfg.k)
                online.run.backward(loss)
                parts.append({**stats, "loss": loss.item()})
            grad_norm = online.run.optimizer_step()
            n_samples = sum(p.pop("n_samples") for p in parts)
            means = {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}
            online.end_step({**means, "grad_norm": grad_norm}, n_samples=n_samples, beta=beta)
        return online.finish()
