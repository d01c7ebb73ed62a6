"""What the online trainers (PPO, RLOO) share on top of ``train_utils.PolicyRun``.

Online RL differs from SFT/DPO in that a step's data is sampled from the policy itself and
scored on the spot, and that two pieces of trainer state evolve with the run: the KL
coefficient β (if adaptive) and the running moments used to normalise scores. Both live in
``TrainingRun.state``, so a checkpoint holds them next to the weights, optimizer and RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .actor_critic import ActorCritic
from .advantages import AdaptiveKLController, FixedKLController, ScoreShaper, ScoreShaping
from .generate import SamplingParams
from .rewards import SharedBaseReward, bind_reward
from .train_utils import PolicyRun, PolicySettings, load_for_training


def rl_sampling() -> SamplingParams:
    # temperature 1 and no nucleus cut: the rollout distribution is the policy itself, so the
    # log-probs the trainers compute are those of the distribution the tokens were drawn from
    return SamplingParams(max_new_tokens=64, temperature=1.0, top_p=1.0, max_prompt_tokens=256)


@dataclass
class OnlineSettings(PolicySettings):
    """Settings PPO and RLOO share (each adds its own). ``max_steps`` counts rollout batches."""
    lr: float = 5e-5
    max_steps: int = 100
    save_every: int = 20
    sampling: SamplingParams = field(default_factory=rl_sampling)
    beta: float = 0.05                # KL coefficient β (initial value when adaptive)
    kl_target: float | None = None    # set → adaptive β steering the KL per response to this
    kl_horizon: int = 10_000
    shaping: ScoreShaping = field(default_factory=ScoreShaping)

    def check(self) -> None:
        super().check()
        if self.beta < 0:
            raise ValueError("beta (the KL coefficient) must be >= 0")


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


class OnlineRun:
    """One PPO or RLOO run: the actor(-critic) on one base model inside a ``PolicyRun``,
    plus β and the score shaper, restored on resume.

    A trainer's loop, top to bottom::

        with online.run:
            batches = online.prompt_batches(prompts)
            while not online.run.done:
                beta = online.kl_ctl.beta
                ...sample, score, update, advance run.step...
                online.end_step(stats, n_samples, beta)
            return online.finish()
    """

    def __init__(self, kind: str, cfg: OnlineSettings, out_dir: str | Path, *, value_head: bool,
                 reward_fn=None, critic_adapter: bool = False, parents: Sequence[str] = ()):
        cfg.check()
        self.cfg = cfg
        model, tok = load_for_training(cfg)
        bind_reward(reward_fn, model, tok)
        ac = ActorCritic(model, value_head=value_head, critic_adapter=critic_adapter,
                         temperature=cfg.sampling.temperature)
        ac.eval()  # no dropout anywhere: a batch's first update starts at ratio 1 exactly
        self.run = PolicyRun(cfg, out_dir, kind, ac, tok, policy=model, parents=parents)
        self.tok = tok
        self.kl_ctl = (AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon)
                       if cfg.kl_target else FixedKLController(cfg.beta))
        self.shaper = ScoreShaper(cfg.shaping)
        self.history: list[dict] = []   # each step's stats, for the run's summary
        if self.run.resumed:
            self.kl_ctl.load_state_dict(self.run.state["kl"])
            self.shaper.moments.load_state_dict(self.run.state["moments"])

    @property
    def ac(self) -> ActorCritic:
        """The unwrapped actor-critic (sampling, no-grad passes); ``run.model`` is the
        accelerate-prepared one that carries gradients."""
        return self.run.unwrapped

    def prompt_batches(self, prompts: Sequence[list[dict]]) -> Iterator[list]:
        """Endless batches of prompts for this process (``batch_size`` each)."""
        return self.run.batches(list(prompts), list)

    def end_step(self, stats: dict, n_samples: int, beta: float) -> dict:
        """After a step: log its stats (averaged over processes), adapt β, checkpoint."""
        run = self.run
        stats = run.metric(**stats, beta=beta)
        self.kl_ctl.update(stats["kl"], n_samples * run.accelerator.num_processes)
        run.state = {"kl": self.kl_ctl.state_dict(), "moments": self.shaper.moments.state_dict()}
        self.history.append(stats)
        run.maybe_checkpoint()
        return stats

    def finish(self) -> Path:
        """Save the policy (and the value head) and mark the run done."""
        policy = self.ac.policy
        if SharedBaseReward.ADAPTER in getattr(policy, "peft_config", {}):
            policy.delete_adapter(SharedBaseReward.ADAPTER)   # the reward model's, not ours
        out = self.run.finish(**summarize(self.history))
        if self.run.is_main and self.ac.value_head is not None:
            torch.save(self.ac.value_head_state(), out / "value_head.pt")
        return out


def summarize(history: list[dict]) -> dict:
    """Reward and KL at the start and end of this invocation (means over up to 5 steps)."""
    if not history:
        return {}
    k = max(1, min(5, len(history) // 2))

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)
    return {"reward_first": mean(history[:k], "reward"), "reward_last": mean(history[-k:], "reward"),
            "kl_last": mean(history[-k:], "kl"),
            "response_len_last": mean(history[-k:], "response_len")}
