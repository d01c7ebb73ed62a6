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


class OnlineRun:
    """Set-up and loop shared by PPO and RLOO: one base model with the policy adapter (and
    the critic, for PPO), the optimizer, β, the score shaper, the run folder and resume.

    ``run(step_fn)`` calls ``step_fn(prompts_of_this_step) -> metrics`` ``max_steps`` times,
    logging, checkpointing and drawing the progress bar; then saves the policy.
    """

    def __init__(self, kind: str, cfg, prompts: list[list[dict]], out_dir: str | Path, *,
                 value_head: bool, parents=()):
        from dataclasses import asdict

        from annotate.runlog import RunLog

        from .actor_critic import ActorCritic
        from .advantages import AdaptiveKLController, FixedKLController, ScoreShaper
        from .lm import load_policy

        if not prompts:
            raise ValueError("no prompts to train on")
        self.kind, self.cfg, self.prompts, self.out = kind, cfg, prompts, Path(out_dir)
        self.acc = accelerator_for(cfg.seed)
        self.model, self.tok = load_policy(cfg.model, lora=cfg.lora, trainable=True)
        self.ac = ActorCritic(self.model, value_head=value_head,
                              critic_adapter=getattr(cfg, "critic", "shared") == "adapter",
                              temperature=cfg.sampling.temperature).to(self.acc.device)
        self.ac.eval()  # no dropout anywhere: a batch's first update starts at ratio 1 exactly
        self.optimizer = self._optimizer()
        self.kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
                       if cfg.kl_target else FixedKLController(cfg.kl_coef))
        self.shaper = ScoreShaper(cfg.shaping)
        self.log = RunLog(self.out, kind, asdict(cfg), parents=parents,
                          is_main=self.acc.is_main_process)
        self.start = 0
        state = load_checkpoint(self.out, self.ac, self.optimizer)
        if state:
            self.start = state["step"]
            self.kl_ctl.load_state_dict(state["kl"])
            self.shaper.moments.load_state_dict(state["moments"])
            self.log.log(f"resumed from step {self.start}")
        self.wrapped, self.optimizer = self.acc.prepare(self.ac, self.optimizer)

    def _optimizer(self) -> torch.optim.Optimizer:
        head = list(self.ac.value_head.parameters()) if self.ac.value_head is not None else []
        head_ids = {id(p) for p in head}
        lora = [p for p in self.ac.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": lora, "lr": self.cfg.lr}]
        if head:  # the fresh value head learns from zero: its own, larger step size
            groups.append({"params": head, "lr": self.cfg.value_head_lr})
        return torch.optim.AdamW(groups, weight_decay=0.0)

    def checkpoint(self, step: int) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.out, self.ac, self.optimizer,
                            {"step": step, "kl": self.kl_ctl.state_dict(),
                             "moments": self.shaper.moments.state_dict()})

    def run(self, step_fn, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        from .lm import save_policy

        cfg, acc = self.cfg, self.acc
        history: list[dict] = []
        bar = tqdm(range(self.start, cfg.max_steps), desc=self.kind, unit="step",
                   disable=not progress or not acc.is_local_main_process)
        try:
            for step in bar:
                idx = prompt_batch(len(self.prompts), step, cfg.batch_size, cfg.seed,
                                   acc.process_index, acc.num_processes)
                beta = self.kl_ctl.beta
                stats = {**step_fn([self.prompts[i] for i in idx]), "beta": beta}
                self.kl_ctl.update(stats["kl"], stats.pop("n_samples") * acc.num_processes)
                self.log.metric(step + 1, **stats)
                history.append(stats)
                bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.3f}")
                if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
                    self.checkpoint(step + 1)
            self.checkpoint(cfg.max_steps)
            summary = summarize(history, self.start)
            if acc.is_main_process:
                save_policy(self.ac.policy, self.tok, self.out, self.model.base_spec,
                            extra={"trained_by": self.kind})
                if self.ac.value_head is not None:
                    torch.save(self.ac.value_head_state(), self.out / "value_head.pt")
            self.log.finish(**summary)
            return summary
        except BaseException as exc:
            self.log.fail(exc)
            raise


def summarize(history: list[dict], start: int) -> dict:
    """First and last reward/KL of this invocation (means over up to 5 steps at each end)."""
    if not history:
        return {"steps": start}
    k = max(1, min(5, len(history) // 2))

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)
    return {"steps": start + len(history),
            "reward_first": mean(history[:k], "reward"), "reward_last": mean(history[-k:], "reward"),
            "kl_last": mean(history[-k:], "kl"),
            "response_len_last": mean(history[-k:], "response_len")}
