"""LoRA settings (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), one
dataclass for every stage."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraSettings:
    """A low-rank adapter ΔW = (α / r) · B A on the target modules; the base stays frozen."""
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # None: the stage's default (policies: every linear layer; reward models: peft's choice
    # for the architecture, attention q and v)
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] = field(default_factory=list)  # extra fully-trained modules

    def peft_config(self, task_type: str, default_targets: list[str] | str | None = None):
        from peft import LoraConfig
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules or default_targets,
                          modules_to_save=list(self.modules_to_save) or None,
                          task_type=task_type)
