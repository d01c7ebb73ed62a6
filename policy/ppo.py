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
    summary = train_ppo(PPOConfig(model="smollm2-135m-instruct", max_steps=50), prompts,
                        reward_fn, "runs/ppo-1")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rewardmodel.hub import DEFAULT_POLICY

from .actor_critic import ActorCritic
from .advantages import ScoreShaper, ScoreShaping, gae, kl_penalized_rewards, whiten
from .generate import SamplingParams, sample
from .lm import LoraSettings
from .losses import PolicyLoss, ValueLoss, masked_mean
from .rewards import RewardFn
from .rl_common import OnlineRun


def rl_sampling() -> SamplingParams:
    # temperature 1 and no nucleus cut: the rollout distribution is the policy itself, so the
    # stored log-probs are those of the distribution the tokens were drawn from
    return SamplingParams(max_new_tokens=64, temperature=1.0, top_p=1.0, max_prompt_tokens=256)


@dataclass
class PPOConfig:
    model: str = DEFAULT_POLICY       # base model spec, or a policy run folder to continue from
    lora: LoraSettings = field(default_factory=LoraSettings)
    sampling: SamplingParams = field(default_factory=rl_sampling)
    max_steps: int = 100              # rollout batches
    batch_size: int = 8               # prompts (one response each) per step and process
    minibatch_size: int = 4           # rollouts per optimiser step
    ppo_epochs: int = 4               # passes over each rollout batch (seed 000: four)
    lr: float = 5e-5                  # LoRA weights
    value_head_lr: float = 1e-3       # the fresh value head learns from zero
    max_grad_norm: float = 1.0
    kl_coef: float = 0.05             # β
    kl_target: float | None = None    # set → adaptive β steering the KL per response here
    kl_horizon: int = 10_000
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip_eps: float | None = 0.2
    vf_coef: float = 0.1              # seed 000: loss = actor + 0.1 · critic
    whiten_advantages: bool = True
    shaping: ScoreShaping = field(default_factory=ScoreShaping)
    critic: str = "shared"            # "shared": head on the policy's hidden states; "adapter"
    seed: int = 0
    save_every: int = 20              # checkpoint every N steps (and at the end)
    forward_batch_size: int = 16      # rollouts per no-grad forward when scoring a batch

    def check(self) -> None:
        if self.critic not in ("shared", "adapter"):
            raise ValueError(f"critic must be 'shared' or 'adapter', not {self.critic!r}")
        for name in ("max_steps", "batch_size", "minibatch_size", "ppo_epochs"):
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


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
         mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, slice]:
    """Drop the columns that are padding in every row of this (mini)batch.

    Returns the trimmed ids and attention mask, the new prompt length, and the slice of the
    response columns that survived (to cut [B, R] tensors the same way).
    """
    P = prompt_len
    first = int((attention_mask[:, :P].sum(0) > 0).float().argmax()) if P else 0
    R = int(mask.sum(-1).max())
    keep = slice(first, P + R)
    return input_ids[:, keep], attention_mask[:, keep], P - first, slice(0, R)


@torch.no_grad()
def make_experience(ac: ActorCritic, tok, prompts: list[list[dict]], reward_fn: RewardFn,
                    shaper: ScoreShaper, beta: float, cfg: PPOConfig):
    """Sample, score and annotate one batch → (Experience, Rollout)."""
    roll = sample(ac.policy, tok, prompts, cfg.sampling)
    P = roll.prompt_len
    mask = roll.response_mask[:, P:].float()                                      # [B, R]
    logprobs, values, ref_logprobs = [], [], []
    for i in range(0, len(prompts), cfg.forward_batch_size):
        ids = roll.input_ids[i:i + cfg.forward_batch_size]
        att = roll.attention_mask[i:i + cfg.forward_batch_size]
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
    return Experience(roll.input_ids, roll.attention_mask, P, mask, logprobs, values, advantages,
                      returns, stats), roll


def ppo_update(model, exp: Experience, optimizer, accelerator, cfg: PPOConfig,
               policy_loss: PolicyLoss, value_loss: ValueLoss) -> dict:
    """ppo_epochs passes over shuffled minibatches of one experience batch; mean stats."""
    totals: dict[str, float] = {}
    n = 0
    B = exp.input_ids.shape[0]
    for _ in range(cfg.ppo_epochs):
        for mb in torch.randperm(B).split(cfg.minibatch_size):
            ids, att, P, cols = trim(exp.input_ids[mb], exp.attention_mask[mb], exp.prompt_len,
                                     exp.mask[mb])
            mask = exp.mask[mb][:, cols]
            logprobs, values = model(ids, att, P)                                # [b, r] each
            pg, pg_stats = policy_loss(logprobs, exp.logprobs[mb][:, cols],
                                       exp.advantages[mb][:, cols], mask)
            vf, vf_stats = value_loss(values, exp.values[mb][:, cols], exp.returns[mb][:, cols],
                                      mask)
            loss = pg + cfg.vf_coef * vf
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in {"loss": loss.item(), "pg_loss": pg.item(), "vf_loss": vf.item(),
                         **pg_stats, **vf_stats}.items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
    return {k: v / n for k, v in totals.items()}


def train_ppo(cfg: PPOConfig, prompts: list[list[dict]], reward_fn: RewardFn,
              out_dir: str | Path, *, parents=(), progress: bool = True) -> dict:
    """Optimise a LoRA policy with PPO; writes a run folder (RunLog, checkpoint, adapter)."""
    cfg.check()
    run = OnlineRun("ppo", cfg, prompts, out_dir, value_head=True, parents=parents)
    policy_loss, value_loss = PolicyLoss(cfg.clip_eps), ValueLoss(cfg.value_clip_eps)
    run.log.log(f"ppo: {len(prompts)} prompts, reward {getattr(reward_fn, 'spec', reward_fn)}")

    def step(batch: list[list[dict]]) -> dict:
        exp, _ = make_experience(run.ac, run.tok, batch, reward_fn, run.shaper, run.kl_ctl.beta, cfg)
        update = ppo_update(run.wrapped, exp, run.optimizer, run.acc, cfg, policy_loss, value_loss)
        return {**exp.stats, **update, "n_samples": len(batch)}
    return run.run(step, progress=progress)
