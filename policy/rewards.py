"""What RS, PPO, RLOO and policy evaluation optimise: a reward function.

Every trainer takes one callable

    reward_fn(prompts: list[list[dict]], responses: list[str]) -> Tensor[B]

so a trained reward model, an ensemble and a programmatic reward all plug in the same way.
``reward_function(rm=..., reward=...)`` builds it from the CLI's ``--rm DIR`` or ``--reward NAME``.

Programmatic rewards (for tests and demos; they need no model):
    markers:WORD[,WORD...]   +1 for each occurrence of one of the words in the response
    length[:N]               −|words − N| / N: prefers responses of about N words (default 20)
"""
from __future__ import annotations

import re
from typing import Callable

import torch

RewardFn = Callable[[list[list[dict]], list[str]], torch.Tensor]


def marker_reward(words: list[str]) -> RewardFn:
    """+1 per occurrence of a marker word (whole words, case-insensitive)."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def reward(prompts: list[list[dict]], responses: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(pattern.findall(r))) for r in responses])
    reward.spec = "markers:" + ",".join(words)
    return reward


def length_reward(target: int = 20) -> RewardFn:
    """−|words − target| / target: 0 at the target length, −1 for an empty response."""
    def reward(prompts: list[list[dict]], responses: list[str]) -> torch.Tensor:
        return torch.tensor([-abs(len(r.split()) - target) / target for r in responses])
    reward.spec = f"length:{target}"
    return reward


def programmatic_reward(name: str) -> RewardFn:
    kind, _, arg = name.partition(":")
    if kind == "markers":
        words = [w.strip() for w in arg.split(",") if w.strip()]
        if not words:
            raise ValueError("--reward markers:WORD[,WORD...] needs at least one word")
        return marker_reward(words)
    if kind == "length":
        if arg and not arg.isdigit():
            raise ValueError(f"--reward length:N needs a whole number of words, got {arg!r}")
        return length_reward(int(arg) if arg else 20)
    raise ValueError(f"unknown reward {name!r}: use markers:WORD,... or length[:N]")


def reward_function(rm: str | None = None, reward: str | None = None) -> RewardFn:
    """The reward of a run: a trained reward model (``rm``) or a programmatic one (``reward``)."""
    if bool(rm) == bool(reward):
        raise ValueError("give exactly one of --rm DIR (a reward model) or --reward NAME")
    if reward:
        return programmatic_reward(reward)
    return reward_model_function(rm)


def reward_model_function(rm_dir: str) -> RewardFn:
    """Scores from a trained reward model or ensemble (``rewardmodel``), as a reward function."""
    try:
        from rewardmodel.score import load_scorer
    except ImportError as err:  # the reward-model layer has not landed yet
        raise ValueError(f"--rm {rm_dir}: reward models are not available in this build "
                         f"({err}); use --reward NAME") from err
    scorer = load_scorer(rm_dir)

    def reward(prompts: list[list[dict]], responses: list[str]) -> torch.Tensor:
        return torch.as_tensor(scorer.score(prompts, responses), dtype=torch.float32)
    reward.spec = f"rm:{rm_dir}"
    return reward
