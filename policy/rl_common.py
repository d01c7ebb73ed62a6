"""Pieces the online trainers (PPO, RLOO) share: prompt batches, checkpoints, the accelerator.

Online RL differs from SFT/DPO in one way that matters here: a step's data is sampled from the
policy itself, so resuming must restore the random state as well as the weights to replay the
same run. A checkpoint is therefore: the trainable weights (LoRA adapter(s) + value head), the
optimizer, the random state, and the trainer's own state (step, KL coefficient, score moments).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoint"


def accelerator_for(seed: int):
    """One Accelerator per run; each process gets its own sampling seed (seed + rank)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    acc = Accelerator()
    set_seed(seed, device_specific=True)
    return acc


def prompt_batch(n_prompts: int, step: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> list[int]:
    """Indices of the prompts this process uses at ``step``.

    Prompts are visited in a fresh seeded permutation every pass, so the batch of any step is a
    function of (seed, step): resuming needs no data-loader state. Each process takes its own
    ``batch_size`` slice of the global batch.
    """
    per_step = batch_size * world
    start = step * per_step + rank * batch_size
    out = []
    for i in range(start, start + batch_size):
        epoch, pos = divmod(i, n_prompts)
        order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(order[pos]))
    return out


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save_checkpoint(out_dir: Path, module: torch.nn.Module, optimizer, state: dict) -> None:
    """Write ``out_dir/checkpoint`` atomically (a crash mid-save leaves the previous one)."""
    final = Path(out_dir) / CHECKPOINT_DIR
    tmp = Path(out_dir) / (CHECKPOINT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu() for n, p in module.named_parameters() if p.requires_grad}
    torch.save(trainable, tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    old = Path(out_dir) / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out_dir: Path, module: torch.nn.Module, optimizer) -> dict | None:
    """Restore weights, optimizer and random state; returns the trainer state (None if fresh)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not (folder / "state.json").exists():
        return None
    trainable = torch.load(folder / "trainable.pt", weights_only=True)
    missing = set(trainable) - {n for n, _ in module.named_parameters()}
    if missing:
        raise ValueError(f"{folder}: checkpoint does not fit this model (e.g. {sorted(missing)[0]})")
    module.load_state_dict(trainable, strict=False)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    _set_rng_state(torch.load(folder / "rng.pt", weights_only=False))
    return json.loads((folder / "state.json").read_text())
