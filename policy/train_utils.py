"""What every policy stage adds to the harness: the policy's settings, loading it for training
with a LoRA adapter, and a ``TrainingRun`` that saves the policy (adapter + ``policy.json``).

Each trainer keeps its own loop readable on top of it (see ``harness.run`` for the shape)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from annotate.runlog import read_run
from harness.config import TrainSettings
from harness.lora import LoraSettings
from harness.run import TrainingRun, seed_everything

from .lm import load_policy, save_policy


@dataclass
class PolicySettings(TrainSettings):
    """What every policy stage's config shares; each stage's dataclass extends it."""
    model: str = "smollm2-135m-instruct"   # base spec or a policy run folder to continue from
    max_steps: int = 100
    warmup_steps: int = 0                   # linear warm-up, then constant
    lora: LoraSettings = field(default_factory=LoraSettings)

    # Command-line options that set a field of a nested settings object in the config.
    NESTED_OPTIONS: ClassVar[dict[str, tuple[str, str]]] = {
        "lora_r": ("lora", "r"), "lora_alpha": ("lora", "alpha"),
        "max_new_tokens": ("sampling", "max_new_tokens"),
        "max_prompt_tokens": ("sampling", "max_prompt_tokens"),
        "temperature": ("sampling", "temperature"), "top_p": ("sampling", "top_p")}


def load_for_training(config: PolicySettings):
    """(model, tokenizer): the policy with a fresh LoRA adapter (or the run folder's adapter, to
    continue training it), seeded first so the adapter's random init is reproducible."""
    seed_everything(config.seed)
    model, tok = load_policy(config.model, lora=config.lora, trainable=True)
    if config.gradient_checkpointing:
        # non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def run_parents(*folders: str | Path | None) -> list[str]:
    """Run ids of the folders that are prefstudio runs (policy to continue from, reward model)."""
    ids = []
    for folder in folders:
        if folder and (Path(folder) / "run.json").exists():
            ids.append(read_run(folder)["id"])
    return ids


class PolicyRun(TrainingRun):
    """A ``TrainingRun`` whose artifact is the policy: ``finish`` saves its adapter and
    ``policy.json``. ``policy``: what to save when ``model`` wraps it (PPO's actor-critic)."""

    def __init__(self, config: PolicySettings, out_dir: str | Path, kind: str,
                 model: torch.nn.Module, tok, *, policy: torch.nn.Module | None = None, **kwargs):
        super().__init__(config, out_dir, kind, model, warmup_steps=config.warmup_steps, **kwargs)
        self.tok = tok
        self.policy = policy if policy is not None else model

    def finish(self, **summary: Any) -> Path:
        return super().finish(save=self.save_policy, **summary)

    def save_policy(self) -> None:
        """The adapter and ``policy.json`` into the run folder (``load_policy(dir)`` reads them)."""
        policy = self.accelerator.unwrap_model(self.policy)
        save_policy(policy, self.tok, self.dir, getattr(policy, "base_spec", self.config.model),
                    extra={"kind": self.kind, "run_id": self.log.id, "step": self.step})
