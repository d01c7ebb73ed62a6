"""The scoring API for policy trainers, judges and evaluation: ``load_scorer(path).score(...)``.

``path`` is a reward-model run folder (``RewardModel``) or an ensemble config (``*.json``):

    {"models": [{"path": "runs/rm-helpful", "weight": 1.0},
                {"path": "runs/rm-style",   "weight": 0.3}],
     "safety": {"path": "runs/rm-safety", "threshold": 0.15, "tags": ["safety"]}}

The ensemble's score is the weighted sum of its models. With ``"normalize": true`` each model's
reward is first put on one scale, (r − mean) / std, from the mean and spread its training
measured (``reward_stats`` in its rm.json: on the held-out responses, or on a sample of training
comparisons when nothing was held out): reward models give rewards of very different sizes,
even two seeds of one recipe, and unnormalised the widest would outvote the rest.
With a ``safety`` model (never normalised: its threshold is on its own scale) it is gated as
in Llama 2 (Touvron et al. 2023, §3.2.2): where the safety score falls below ``threshold`` or
the prompt carries one of ``tags`` (safety-sensitive), the safety score takes over.
Relative paths are read from the config's folder; a member may itself be an ensemble.

Every scorer has ``score(prompts, responses, *, batch_size=16, tags=None) -> Tensor[N]``:
``prompts`` are chat message lists, ``tags`` (optional) one iterable of tags per prompt.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import torch

from harness.hub import ModelNotAvailable
from .model import RewardModel


class Scorer(Protocol):
    def score(self, prompts: Sequence[Sequence[dict]], responses: Sequence[str], *,
              batch_size: int = 16, tags: Sequence[Iterable[str]] | None = None) -> torch.Tensor: ...


@dataclass
class Member:
    scorer: Scorer
    weight: float = 1.0
    path: str = ""
    mean: float = 0.0  # subtracted from the scorer's reward, which is then divided by std
    std: float = 1.0


@dataclass
class SafetyGate:
    scorer: Scorer
    threshold: float
    tags: tuple[str, ...] = ("safety",)
    path: str = ""


class Ensemble:
    """Weighted sum of reward models, optionally gated by a safety reward model."""

    def __init__(self, members: list[Member], safety: SafetyGate | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = members
        self.safety = safety

    @classmethod
    def load(cls, config_path: str | Path) -> "Ensemble":
        config_path = Path(config_path)
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{config_path}: not a readable ensemble config: {err}") from None
        if not isinstance(config, dict) or not isinstance(config.get("models"), list):
            raise ValueError(f'{config_path}: models: expected a list of {{"path": ..., "weight": ...}}')
        loaded: dict[Path, Scorer] = {}  # a model listed twice is loaded once

        def scorer(entry, where: str) -> tuple[Scorer, str]:
            if not isinstance(entry, dict) or not entry.get("path"):
                raise ValueError(f"{config_path}: {where}: path: missing")
            path = (config_path.parent / entry["path"]).resolve()
            if path not in loaded:
                loaded[path] = load_scorer(path)
            return loaded[path], str(path)

        normalize = config.get("normalize", False)
        if not isinstance(normalize, bool):
            raise ValueError(f"{config_path}: normalize: expected true or false")
        members = []
        for i, entry in enumerate(config["models"]):
            s, path = scorer(entry, f"models[{i}]")
            weight = entry.get("weight", 1.0)
            if not isinstance(weight, (int, float)):
                raise ValueError(f"{config_path}: models[{i}]: weight: expected a number")
            mean, std = _scale(s, f"{config_path}: models[{i}] ({path})") if normalize else (0.0, 1.0)
            members.append(Member(s, float(weight), path, mean, std))
        safety = None
        if config.get("safety") is not None:
            entry = config["safety"]
            s, path = scorer(entry, "safety")
            if not isinstance(entry.get("threshold"), (int, float)):
                raise ValueError(f"{config_path}: safety: threshold: expected a number")
            safety = SafetyGate(s, float(entry["threshold"]), tuple(entry.get("tags", ["safety"])), path)
        return cls(members, safety)

    def score(self, prompts: Sequence[Sequence[dict]], responses: Sequence[str], *,
              batch_size: int = 16, tags: Sequence[Iterable[str]] | None = None) -> torch.Tensor:
        total = torch.zeros(len(responses))
        for m in self.members:
            r = m.scorer.score(prompts, responses, batch_size=batch_size, tags=tags)
            total += m.weight * (r - m.mean) / m.std
        if self.safety is None:
            return total
        s = self.safety.scorer.score(prompts, responses, batch_size=batch_size, tags=tags)
        return safety_gated(total, s, self.safety.threshold,
                            is_safety_prompt(tags, self.safety.tags, len(responses)))


def _scale(scorer: Scorer, where: str) -> tuple[float, float]:
    """(mean, std) of a member's rewards, for ``"normalize": true``."""
    if isinstance(scorer, Ensemble):
        raise ValueError(f"{where}: normalize applies to reward models, not to a nested "
                         "ensemble: list its models here instead")
    stats = getattr(scorer, "reward_stats", None)
    if not stats:
        raise ValueError(f"{where}: normalize needs the reward scale the model measured when it "
                         "was trained (reward_stats in its rm.json); this model has none: "
                         "retrain it with this version, or drop normalize and set weights")
    if not stats.get("std", 0) > 0:
        raise ValueError(f"{where}: its rewards have no spread (std {stats.get('std')}), "
                         "so they cannot be normalised")
    return float(stats["mean"]), float(stats["std"])


def safety_gated(helpful: torch.Tensor, safety: torch.Tensor, threshold: float,
                 sensitive: torch.Tensor) -> torch.Tensor:
    """Llama 2's combined reward:  R = R_s  if sensitive(p) or R_s < threshold,  else R_h.

    Shapes: helpful, safety, sensitive (bool) [N] → [N].
    """
    return torch.where(sensitive | (safety < threshold), safety, helpful)


def is_safety_prompt(tags: Sequence[Iterable[str]] | None, safety_tags: Iterable[str], n: int
                     ) -> torch.Tensor:
    if tags is None:
        return torch.zeros(n, dtype=torch.bool)
    wanted = set(safety_tags)
    return torch.tensor([bool(wanted & set(t or ())) for t in tags], dtype=torch.bool)


ENSEMBLE_FILE = "ensemble.json"   # in a folder of members (``train rm --seeds``)


def write_ensemble(folder: str | Path, members: Sequence[str | Path]) -> Path:
    """``folder/ensemble.json``: the members normalised by their own reward scale, equal
    weights, paths relative to the folder (so it can be moved). Left untouched when its text
    would not change."""
    folder = Path(folder)
    config = folder / ENSEMBLE_FILE
    text = json.dumps({"normalize": True, "models": [
        {"path": os.path.relpath(Path(m).resolve(), folder.resolve()), "weight": 1.0}
        for m in members]}, indent=2)
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return config


def load_scorer(path: str | Path) -> Scorer:
    """A reward-model run folder, an ensemble ``.json`` or a folder holding ``ensemble.json``
    (what ``--rm`` accepts)."""
    path = Path(path)
    if path.is_dir() and not (path / "rm.json").exists() and (path / ENSEMBLE_FILE).is_file():
        path = path / ENSEMBLE_FILE
    if path.suffix == ".json" and path.is_file():
        return Ensemble.load(path)
    if not path.exists():
        raise ModelNotAvailable(f"reward model {path} does not exist")
    return RewardModel.load(path)
