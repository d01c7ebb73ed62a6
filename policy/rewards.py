"""Reward callables for RS / PPO / RLOO / evaluation: one signature for every kind of reward.

    reward_fn(prompts: list[list[dict]], responses: list[str]) -> Tensor[B]

A trained reward model (``--rm DIR``), an ensemble, or a named programmatic reward
(``--reward keyword:zebra``) all fit it, so the trainers never care which one they got.
Programmatic rewards exist for tests and demos: they make "did the policy learn?" checkable
without training a reward model first.
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Sequence

import torch

RewardFn = Callable[[Sequence[Sequence[dict]], Sequence[str]], torch.Tensor]

PROGRAMMATIC = {
    "keyword:W1,W2": "+1 per occurrence of any listed word (case-insensitive, whole words)",
    "length": "the number of words in the response",
    "length:N": "minus the distance to N words, divided by N (a target length)",
}


def keyword_reward(words: Sequence[str]) -> RewardFn:
    """+1 for every whole-word occurrence of any of ``words``."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def reward(prompts, responses) -> torch.Tensor:
        return torch.tensor([float(len(pattern.findall(r))) for r in responses])
    return reward


def length_reward(target: int | None = None) -> RewardFn:
    """Words in the response, or −|words − target| / target when a target is given."""
    def reward(prompts, responses) -> torch.Tensor:
        n = torch.tensor([float(len(r.split())) for r in responses])
        return n if target is None else -(n - target).abs() / target
    return reward


def named_reward(spec: str) -> RewardFn:
    """A programmatic reward by name: ``keyword:zebra,quokka``, ``length``, ``length:40``."""
    name, _, arg = spec.partition(":")
    if name == "keyword":
        words = [w.strip() for w in arg.split(",") if w.strip()]
        if not words:
            raise ValueError("--reward keyword:W1,W2 needs at least one word")
        return keyword_reward(words)
    if name == "length":
        if not arg:
            return length_reward()
        if not arg.isdigit() or int(arg) <= 0:
            raise ValueError(f"--reward length:N needs a positive whole number, not {arg!r}")
        return length_reward(int(arg))
    raise ValueError(f"unknown reward {spec!r}; choose one of: {', '.join(PROGRAMMATIC)}")


def reward_model(run_dir: str | Path, batch_size: int = 16) -> RewardFn:
    """A trained reward model's (or an ensemble config's) ``score`` as a reward callable (the
    model stays loaded). A reward model trained on the policy's base (``shared_backbone`` in
    its rm.json) becomes a ``SharedBaseReward`` instead: no second copy of the base."""
    from rewardmodel.score import load_scorer

    if SharedBaseReward.applies(run_dir):
        return SharedBaseReward(run_dir, batch_size)
    rm = load_scorer(run_dir)

    def reward(prompts, responses) -> torch.Tensor:
        return rm.score(prompts, responses, batch_size=batch_size).float()
    reward.model = rm  # type: ignore[attr-defined]
    return reward


class SharedBaseReward:
    """A reward model that lives on the policy's own base model: its LoRA adapter is loaded
    into the policy as one more adapter (``"reward"``) and its head reads the same hidden
    states, so PPO/RLOO/RS hold one copy of the base weights for policy, reference, critic and
    reward model. A head trained on the bare base (no adapter) reads the base with the policy's
    adapter switched off.

    Trainers call ``bind(policy, tok)`` once the policy is loaded (``bind_reward``); scoring
    before that is an error.
    """
    ADAPTER = "reward"

    def __init__(self, run_dir: str | Path, batch_size: int = 16):
        from rewardmodel.model import read_info

        self.dir, self.batch_size = Path(run_dir), batch_size
        self.info = read_info(run_dir)
        self.rm = self.policy = None

    @staticmethod
    def applies(run_dir: str | Path) -> bool:
        from rewardmodel.model import RM_FILE, read_info

        return (Path(run_dir) / RM_FILE).exists() and bool(read_info(run_dir).get("shared_backbone"))

    def bind(self, policy, tok) -> None:
        from harness.hub import resolve
        from rewardmodel.model import RewardModel

        base = getattr(policy, "base_spec", None)
        if base is None or Path(resolve(base)).resolve() != Path(resolve(self.info["backbone"])).resolve():
            raise ValueError(f"--rm {self.dir}: trained on {self.info['backbone']}, "
                             f"not on the policy's base {base}")
        rm = RewardModel.load_on_backbone(self.dir, policy, tok, adapter_name=self.ADAPTER)
        self.rm, self.policy, self.adapter = rm, policy, rm.adapter

    def __call__(self, prompts, responses) -> torch.Tensor:
        from .lm import reference

        if self.rm is None:
            raise RuntimeError(f"the reward model {self.dir} shares the policy's base: "
                               "call bind(policy, tok) first")
        with (reference(self.policy) if self.adapter is None else nullcontext()):
            return self.rm.score(prompts, responses, batch_size=self.batch_size).float()


def bind_reward(reward_fn, policy, tok) -> None:
    """Give a reward that shares the policy's base (it has ``bind``) the loaded policy."""
    if hasattr(reward_fn, "bind"):
        reward_fn.bind(policy, tok)


def load_reward(rm: str | None = None, reward: str | None = None) -> tuple[RewardFn, str]:
    """The reward for a CLI call: ``--rm DIR`` or ``--reward NAME`` (exactly one).

    Returns (callable, scorer name); the name goes into scores.jsonl rows.
    """
    if bool(rm) == bool(reward):
        raise ValueError("give exactly one of --rm DIR (a trained reward model) or --reward NAME "
                         f"({', '.join(PROGRAMMATIC)})")
    if reward:
        return named_reward(reward), f"reward:{reward}"
    if not Path(rm).exists():
        raise ValueError(f"--rm {rm}: no such folder")
    return reward_model(rm), f"rm:{Path(rm).resolve()}"


def score_in_batches(reward_fn: RewardFn, prompts: Sequence[Sequence[dict]],
                     responses: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Call ``reward_fn`` on slices so a large set of samples never forms one huge batch."""
    parts = [reward_fn(prompts[i:i + batch_size], responses[i:i + batch_size]).float().cpu()
             for i in range(0, len(responses), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)
