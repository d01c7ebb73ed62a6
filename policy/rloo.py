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

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rewardmodel.hub import DEFAULT_POLICY

from .advantages import ScoreShaping, rloo_advantages
from .generate import SamplingParams, sample
from .lm import LoraSettings
from .losses import ReinforceLoss
from .ppo import rl_sampling, trim
from .rewards import RewardFn
from .rl_common import OnlineRun


@dataclass
class RLOOConfig:
    model: str = DEFAULT_POLICY       # base model spec, or a policy run folder to continue from
    lora: LoraSettings = field(default_factory=LoraSettings)
    sampling: SamplingParams = field(default_factory=rl_sampling)
    max_steps: int = 100              # rollout batches = optimiser steps
    batch_size: int = 4               # prompts per step and process
    k: int = 4                        # samples per prompt (the paper's best: k = 4)
    micro_batch_prompts: int = 4      # prompts (× k responses) per forward/backward pass
    lr: float = 5e-5
    max_grad_norm: float = 1.0
    kl_coef: float = 0.05             # β of the sequence-level KL penalty
    kl_target: float | None = None    # set → adaptive β (Ziegler et al. 2019)
    kl_horizon: int = 10_000
    shaping: ScoreShaping = field(default_factory=ScoreShaping)
    seed: int = 0
    save_every: int = 20

    def check(self) -> None:
        if self.k < 2:
            raise ValueError("RLOO needs k >= 2 samples per prompt")
        for name in ("max_steps", "batch_size", "micro_batch_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def rloo_step(run: OnlineRun, prompts: list[list[dict]], reward_fn: RewardFn,
              loss_fn: ReinforceLoss, cfg: RLOOConfig) -> dict:
    """Sample k per prompt, score, and take one REINFORCE step with the leave-one-out baseline."""
    k, B = cfg.k, len(prompts)
    repeated = [p for p in prompts for _ in range(k)]            # rows i·k … i·k+k−1: prompt i
    roll = sample(run.ac.policy, run.tok, repeated, cfg.sampling)
    raw = reward_fn(repeated, roll.texts).float().cpu()                          # [B·k]
    scores = run.shaper(raw, torch.tensor(roll.finished))
    P, beta = roll.prompt_len, run.kl_ctl.beta
    mask_all = roll.response_mask[:, P:].float()                                 # [B·k, R]
    kls, advantages, loss_total = [], [], 0.0
    for start in range(0, B, cfg.micro_batch_prompts):
        rows = slice(start * k, min(B, start + cfg.micro_batch_prompts) * k)
        ids, att, p, cols = trim(roll.input_ids[rows], roll.attention_mask[rows], P, mask_all[rows])
        mask = mask_all[rows][:, cols]
        logprobs, _ = run.wrapped(ids, att, p)                                   # [m·k, r]
        ref = run.ac.reference_logprobs(ids, att, p)
        kl = ((logprobs.detach() - ref) * mask).sum(-1)                          # [m·k]
        reward = scores[rows].to(kl.device) - beta * kl
        adv = rloo_advantages(reward.view(-1, k)).view(-1)                       # [m·k]
        # a micro-batch of m prompts carries m/B of the batch's loss
        loss = loss_fn(logprobs, adv, mask) * (reward.numel() / (B * k))
        run.acc.backward(loss)
        kls.append(kl)
        advantages.append(adv)
        loss_total += loss.item()
    if cfg.max_grad_norm:
        run.acc.clip_grad_norm_(run.wrapped.parameters(), cfg.max_grad_norm)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    kl, adv = torch.cat(kls), torch.cat(advantages)
    return {"reward": raw.mean().item(), "score": scores.mean().item(), "kl": kl.mean().item(),
            "loss": loss_total, "advantage_abs": adv.abs().mean().item(),
            "response_len": mask_all.sum(-1).mean().item(),
            "finished": torch.tensor(roll.finished).float().mean().item(), "n_samples": B * k}


def train_rloo(cfg: RLOOConfig, prompts: list[list[dict]], reward_fn: RewardFn,
               out_dir: str | Path, *, parents=(), progress: bool = True) -> dict:
    """Optimise a LoRA policy with RLOO; writes a run folder (RunLog, checkpoint, adapter)."""
    cfg.check()
    run = OnlineRun("rloo", cfg, prompts, out_dir, value_head=False, parents=parents)
    run.log.log(f"rloo: {len(prompts)} prompts, k={cfg.k}, "
                f"reward {getattr(reward_fn, 'spec', reward_fn)}")
    loss_fn = ReinforceLoss()
    return run.run(lambda batch: rloo_step(run, batch, reward_fn, loss_fn, cfg), progress=progress)
