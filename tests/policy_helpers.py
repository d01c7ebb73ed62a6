"""Shared set-up for the PPO / RLOO / policy-evaluation tests (tiny models, marker reward)."""
import random

from policy.lm import LoraSettings
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
