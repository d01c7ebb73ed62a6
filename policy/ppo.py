"""PPO against a reward function, as seed 000 lays it out, with LoRA on one base model.

Each step:
  1. sample    B prompts → B responses (policy.generate.sample); under no_grad store the
               policy's log-probs and the critic's values (the "old" ones), and the reference
               log-probs (same base, adapter off).
  2. feedback  score = reward_fn(prompt, response), shaped (running normalisation, clip, a
               penalty if the response never ended); per-token reward −β·(log π_old − log π_ref)
               with the score added on the last token; GAE(γ, λ) → advantages (whitened), returns.
  3. learn     ppo_epochs passes (4, the seed's "each batch used four times") over shuffled
               minibatches: loss = clipped policy loss + vf_coef (0.1) · clipped value loss.
  4. β         optionally adapted towards a target KL (Ziegler et al. 2019).

    from policy.ppo import PPOConfig, train_ppo
    run_dir = train_ppo(PPOConfig(model="smollm2-135m-instruct", max_steps=50), prompts,
                        reward_fn, "runs/ppo-1")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .actor_critic import ActorCritic
from .advantages import ScoreShaper, gae, kl_penalized_rewards, whiten
from .generate import sample
from .losses import clipped_value_loss, masked_mean, ppo_clip_loss
from .rewards import RewardFn
from .rl_common import OnlineRun, OnlineSettings, trim


@dataclass
class PPOConfig(OnlineSettings):
    batch_size: int = 8               # prompts (one response each) per step and process
    minibatch_size: int = 4           # rollouts per optimiser update
    ppo_epochs: int = 4               # passes over each rollout batch (seed 000: four)
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip_eps: float | None = 0.2
    vf_coef: float = 0.1              # seed 000: loss = actor + 0.1 · critic
    whiten_advantages: bool = True
    critic: str = "shared"            # "shared": head on the policy's hidden states; "adapter"
    forward_batch_size: int = 16      # rollouts per no-grad pass when scoring a batch

    def check(self) -> None:
        super().check()
        if self.critic not in ("shared", "adapter"):
            raise ValueError(f"critic must be 'shared' or 'adapter', not {self.critic!r}")
        if self.grad_accum != 1:
            raise ValueError("PPO splits a rollout batch with minibatch_size, not grad_accum")
        for name in ("minibatch_size", "ppo_epochs", "forward_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class Experience:
    """One rollout batch with everything the PPO epochs reuse. R = response positions."""
    input_ids: torch.Tensor           # [B, P+R]
    attention_mask: torch.Tensor      # [B, P+R]
    prompt_len: int
    mask: torch.Tensor                # [B, R]  1 on response tokens
    logprobs: torch.Tensor            # [B, R]  log π_old
    values: torch.Tensor              # [B, R]  V_old
    advantages: torch.Tensor          # [B, R]
    returns: torch.Tensor             # [B, R]
    stats: dict


@torch.no_grad()
def make_experience(ac: ActorCritic, tok, prompts: list[list[dict]], reward_fn: RewardFn,
                    shaper: ScoreShaper, beta: float, cfg: PPOConfig):
    """Sample, score and annotate one batch → (Experience, Rollout)."""
    roll = sample(ac.policy, tok, prompts, cfg.sampling)
    device = next(ac.parameters()).device
    P = roll.prompt_len
    input_ids, attention_mask = roll.input_ids.to(device), roll.attention_mask.to(device)
    mask = roll.response_mask[:, P:].float().to(device)                           # [B, R]
    logprobs, values, ref_logprobs = [], [], []
    for i in range(0, len(prompts), cfg.forward_batch_size):
        ids = input_ids[i:i + cfg.forward_batch_size]
        att = attention_mask[i:i + cfg.forward_batch_size]
        lp, v = ac(ids, att, P)
        logprobs.append(lp)
        values.append(v)
        ref_logprobs.append(ac.reference_logprobs(ids, att, P))
    logprobs, values = torch.cat(logprobs) * mask, torch.cat(values) * mask
    ref_logprobs = torch.cat(ref_logprobs) * mask

    raw = reward_fn(prompts, roll.texts).float().cpu()                           # [B]
    finished = torch.tensor(roll.finished)
    scores = shaper(raw, finished).to(mask.device)
    rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    stats = {"reward": raw.mean().item(), "score": scores.mean().item(),
             "kl": kl.sum(-1).mean().item(), "response_len": mask.sum(-1).mean().item(),
             "finished": finished.float().mean().item(),
             "value": masked_mean(values, mask).item(), "return": masked_mean(returns, mask).item()}
    return Experience(input_ids, attention_mask, P, mask, logprobs, values, advantages, returns,
                      stats), roll


def ppo_update(run, exp: Experience, cfg: PPOConfig) -> dict:
    """ppo_epochs passes over shuffled minibatches of one experience batch; mean stats."""
    totals: dict[str, float] = {}
    n = 0
    for _ in range(cfg.ppo_epochs):
        for mb in torch.randperm(exp.input_ids.shape[0]).split(cfg.minibatch_size):
            mb = mb.to(exp.input_ids.device)
            ids, att, P, cols = trim(exp.input_ids[mb], exp.attention_mask[mb], exp.prompt_len,
                                     exp.mask[mb])
            mask = exp.mask[mb][:, cols]
            logprobs, values = run.model(ids, att, P)                            # [b, r] each
            old_logprobs, advantages = exp.logprobs[mb][:, cols], exp.advantages[mb][:, cols]
            returns = exp.returns[mb][:, cols]
            pg_tokens = ppo_clip_loss(logprobs, old_logprobs, advantages, cfg.clip_eps)  # [b, r]
            vf_tokens = clipped_value_loss(values, exp.values[mb][:, cols], returns,
                                           cfg.value_clip_eps)                        # [b, r]
            pg, vf = masked_mean(pg_tokens, mask), masked_mean(vf_tokens, mask)
            loss = pg + cfg.vf_coef * vf
            run.backward(loss)
            grad_norm = run.optimizer_step(advance=False)
            with torch.no_grad():
                log_ratio = logprobs - old_logprobs
                stats = {  # where clipping is active: the loss exceeds its unclipped term
                    "clipfrac": masked_mean((pg_tokens > -advantages * log_ratio.exp()).float(), mask),
                    # Schulman's k2 estimator of KL(π_old || π): how far this epoch moved
                    "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask),
                    "vf_clipfrac": masked_mean((vf_tokens > 0.5 * (values - returns) ** 2).float(), mask)}
            for k, v in {"loss": loss.item(), "pg_loss": pg.item(), "vf_loss": vf.item(),
                         "grad_norm": grad_norm, **{k: v.item() for k, v in stats.items()}}.items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
    run.advance()
    return {k: v / n for k, v in totals.items()}


def train_ppo(cfg: PPOConfig, prompts: Sequence[list[dict]], reward_fn: RewardFn,
              out_dir: str | Path, *, parents: Sequence[str] = ()) -> Path:
    """Optimise a LoRA policy with PPO; writes a run folder (RunLog, checkpoint, adapter)."""
    if not prompts:
        raise ValueError("no prompts to train on")
    online = OnlineRun("ppo", cfg, out_dir, reward_fn=reward_fn, value_head=True,
                       critic_adapter=cfg.critic == "adapter", parents=parents)
    online.run.log.log(f"ppo: {len(prompts)} prompts")
    with online.run:
        batches = online.prompt_batches(prompts)
        while not online.run.done:
            beta = online.kl_ctl.beta
            batch = next(batches)
            exp, _ = make_experience(online.ac, online.tok, batch, reward_fn, online.shaper,
                                     beta, cfg)
            stats = ppo_update(online.run, exp, cfg)          # advances run.step
            online.end_step({**exp.stats, **stats}, n_samples=len(batch), beta=beta)
        return online.finish()
