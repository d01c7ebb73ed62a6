"""Shared set-up for the PPO / RLOO / policy-evaluation tests (tiny models, marker reward)."""
import random

import torch

from harness.lora import LoraSettings
from policy.lm import load_policy
from tiny_models import MARKERS, WORDS

TINY_LORA = LoraSettings(r=8, alpha=16)   # on the fixture ``tiny_policy`` (larger init scale)


def tiny_prompts(n: int = 16, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    plain = [w for w in WORDS if w not in MARKERS]
    return [[{"role": "user", "content": " ".join(rng.sample(plain, 5))}] for _ in range(n)]


def metric_series(rows: list[dict], name: str) -> list[float]:
    return [r["value"] for r in sorted(rows, key=lambda r: r["step"]) if r["name"] == name]


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def shared_base_rm(base, folder):
    """A reward model on ``base``'s weights: its own LoRA adapter (random, non-zero) + head."""
    from peft import LoraConfig
    from rewardmodel.model import RewardModel
    model, tok = load_policy(str(base), lora=LoraSettings(r=4, alpha=8), trainable=True)
    model.add_adapter("reward", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    rm = RewardModel.on_backbone(model, tok, adapter="reward", spec=str(base))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.reward" in name:
                p.normal_(0, 0.3)
    rm.save(folder)
    return folder
