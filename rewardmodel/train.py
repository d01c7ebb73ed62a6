"""Reward-model training: ``train(RMConfig, TrainingData) -> summary``, on accelerate.

The loop is plain (nanoGPT-like): for each optimizer step, ``grad_accum`` micro-batches per
process, gradients synchronised on the last one, clip, step. It runs unchanged under
``accelerate launch`` with several processes: every process builds the same batch list (seeded)
and takes every world-size-th micro-batch, DDP averages the gradients, rank 0 writes the run
folder. Evaluation on the held-out split every ``eval_every`` steps keeps the best model in
``<out>/adapter`` (or ``<out>/model``) and stops early after ``patience`` evaluations without
improvement; ``<out>/checkpoint/`` lets a crashed or killed run resume where it stopped.

The job never opens the database: the CLI (or the server) ingests the run folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from annotate.runlog import RunLog
from annotate.trainingdata import TrainingData

from . import batches as B
from harness import heap
from harness.hub import SMOLLM2
from .losses import (centering_penalty, pairwise_loss, ranking_loss, ranking_pairs,
                     reduce_weighted, soft_pairwise_loss)
from .model import LoraSettings, RewardModel

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
STATS_SAMPLE = 128  # training comparisons scored for the reward scale when nothing is held out
# a checkpoint can only be resumed by a run that would make the same batches and model
_RESUME_KEYS = ("base", "max_length", "lora_r", "lora_alpha", "lora_targets", "batch_size",
                "grad_accum", "seed", "eval_fraction", "bucket", "use_rankings")


@dataclass
class RMConfig:
    out: str = "runs/rm"
    base: str = SMOLLM2                 # backbone spec: smollm2-135m-instruct, minilm, folder, hub id
    kind: str | None = None             # decoder | encoder (default: from the checkpoint)
    max_length: int = 512               # tokens per (prompt, response); prompts cut from the left
    lora_r: int = 16                    # 0: full fine-tuning
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] | str | None = None  # None: peft's default (attention q, v)
    train_modules: list[str] = field(default_factory=list)  # extra fully-trained modules (e.g. pooler)
    batch_size: int = 8                 # comparisons (pairs or rankings) per micro-batch per process
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"           # transformers.get_scheduler name
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int | None = None        # optimizer steps; overrides epochs
    eval_fraction: float = 0.1          # prompts kept aside for evaluation (0: none)
    eval_every: int = 50                # steps; also the checkpoint interval
    patience: int | None = None         # evaluations without improvement before stopping
    keep_best: bool = True              # the saved model is the best evaluated one
    use_margin: bool = True             # Llama-2 margin m from the label's margin level
    margin_values: dict[str, float] | None = None  # level -> m (default: the store's values)
    soft_labels: bool = True            # BCE on an AI judge's soft_prob when the pair has one
    use_rankings: bool = True           # K-way tasks train as rankings (InstructGPT loss)
    center_coef: float = 0.0            # reward-centering penalty coefficient (0.01 is typical)
    bucket: bool = True                 # length-bucketed batches
    share_prompt: bool = True           # decoders: a comparison's responses share one prompt pass
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward
    seed: int = 0
    log_every: int = 10
    resume: bool = True                 # continue from <out>/checkpoint when it exists

    def lora(self) -> LoraSettings | None:
        if self.lora_r <= 0:
            return None
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                            target_modules=self.lora_targets, modules_to_save=list(self.train_modules))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- loss -----------------------------------------------------------------------------------

def batch_loss(rewards: torch.Tensor, batch: B.Batch, center_coef: float = 0.0
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted mean of each comparison's loss, plus optional centering.

    A pair uses the margin loss, or soft BCE when an AI judge gave a probability; a K-way
    ranking uses the rank-list loss (the mean over its pairs). rewards: [N responses].
    """
    losses = []
    wins = torch.zeros((), device=rewards.device)
    n_pairs = 0
    for c, off in zip(batch.comparisons, batch.offsets):
        r = rewards[off:off + len(c.responses)]  # [K]
        if c.is_pair:
            r_c, r_r = r[c.ranking[0][0]], r[c.ranking[1][0]]
            if c.soft_prob is not None:
                loss = soft_pairwise_loss(r_c, r_r, torch.tensor(float(c.soft_prob)))
            else:
                loss = pairwise_loss(r_c, r_r, c.margin)
            wins = wins + (r_c > r_r).float()
            n_pairs += 1
        else:
            loss = ranking_loss(r, c.ranking)
            w, l = ranking_pairs(c.ranking)
            wins = wins + (r[w] > r[l]).float().sum()
            n_pairs += len(w)
        losses.append(loss)
    weights = torch.tensor([c.weight for c in batch.comparisons], device=rewards.device)
    loss = reduce_weighted(torch.stack(losses), weights)
    if center_coef:
        loss = loss + center_coef * centering_penalty(rewards)
    stats = {"accuracy": wins.detach() / max(n_pairs, 1), "reward_mean": rewards.detach().mean()}
    return loss, stats


@torch.inference_mode()
def evaluate_comparisons(model: RewardModel, comparisons: list[B.Comparison], batch_size: int,
                         share_prompt: bool = True) -> torch.Tensor:
    """Sums over the comparisons: [pairs, correct, -log σ(r_w − r_l), responses, Σr, Σr²].

    The last three give the reward's mean and spread, kept with the model so that an ensemble
    can put members of different scales on one (score.py, ``"normalize"``).
    """
    totals = torch.zeros(6, dtype=torch.float64)
    order = sorted(range(len(comparisons)), key=lambda i: comparisons[i].length)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        batch = B.collate(model, [comparisons[i] for i in order[start:start + batch_size]],
                          share_prompt)
        rewards = model(**{k: v.to(model.device) for k, v in batch.inputs.items()}).cpu()
        r = rewards.double()
        totals[3:] += torch.stack([torch.tensor(float(len(r))), r.sum(), (r * r).sum()])
        for c, off in zip(batch.comparisons, batch.offsets):
            w, l = ranking_pairs(c.ranking)
            diff = rewards[[off + i for i in w]] - rewards[[off + i for i in l]]
            totals[:3] += torch.stack([torch.tensor(float(len(w))), (diff > 0).double().sum(),
                                       pairwise_loss(diff, torch.zeros_like(diff)).double().sum()])
    model.train(was_training)
    return totals


# --- the loop -------------------------------------------------------------------------------

def train(config: RMConfig, data: TrainingData, *, eval_data: TrainingData | None = None,
          model: RewardModel | None = None, parents: tuple[str, ...] = ()) -> dict:
    """Train a reward model on ``data``; the run folder ``config.out`` receives everything.

    ``eval_data`` replaces the automatic held-out split. ``model`` trains a reward model built
    by the caller (e.g. ``RewardModel.on_backbone`` on the policy's base) instead of a fresh
    one from ``config.base``. Returns the run summary (also stored in run.json).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) must be
    # told to use CPU DDP (gloo); otherwise each would silently train alone.
    acc = Accelerator(cpu=not torch.cuda.is_available())
    on_cpu = acc.device.type == "cpu"
    if on_cpu:  # activations' memory goes back to the OS when freed (heap.py: why)
        heap.map_large_blocks()
    set_seed(config.seed)  # the same fresh head on every process
    out = Path(config.out)
    if model is None:
        model = RewardModel.from_spec(config.base, max_length=config.max_length,
                                      lora=config.lora(), kind=config.kind)
    if config.gradient_checkpointing:
        # keeps one layer's activations instead of all of them: SmolLM2 at 16 pairs x 256
        # tokens needs ~23 GB without it. Non-reentrant: the frozen embeddings need no grad.
        model.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    comparisons = _comparisons(config, data)
    if eval_data is not None:
        train_set, eval_set = comparisons, _comparisons(config, eval_data)
    else:
        train_set, eval_set = B.split_holdout(comparisons, config.eval_fraction, config.seed)
    if not train_set:
        raise ValueError("no training comparisons: the data has no pair with a preference")
    B.encode_all(model, train_set + eval_set)
    lengths = [c.length for c in train_set]

    world, rank = acc.num_processes, acc.process_index
    per_epoch = math.ceil(len(train_set) / config.batch_size)  # micro-batches in one epoch
    micro_per_step = config.grad_accum * world
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * per_epoch / micro_per_step))

    params = [p for _, p in model.trainable_parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.scheduler, optimizer,
                              num_warmup_steps=int(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    log = RunLog(out, "rm", config.to_dict(), parents=parents, data_hash=data.data_hash,
                 label_ids=data.label_ids, is_main=acc.is_main_process)
    state = _load_checkpoint(out, config, data.data_hash, model, optimizer, scheduler) \
        if config.resume else None
    step = state["step"] if state else 0
    best = state["best"] if state else None            # (accuracy, -loss) of the best eval
    bad_evals = state["bad_evals"] if state else 0
    if state:
        log.log(f"resumed from step {step}")
    ddp_model, optimizer = acc.prepare(model, optimizer)  # scheduler stays ours: one step per step
    log.log(f"train {len(train_set)} comparisons, held out {len(eval_set)}, {total_steps} steps, "
            f"{world} process(es)")

    epochs: dict[int, list[list[int]]] = {}

    def micro_batch(index: int) -> B.Batch:
        epoch, i = divmod(index, per_epoch)
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = B.epoch_batches(lengths, config.batch_size, epoch, config.seed, config.bucket)
        return B.collate(model, [train_set[j] for j in epochs[epoch][i]], config.share_prompt)

    bar = tqdm(total=total_steps, initial=step, desc="train rm", disable=not acc.is_main_process,
               dynamic_ncols=True)
    running = torch.zeros(3)  # loss, accuracy, micro-batches since the last log line
    samples, t0, stopped_early, last_loss = 0, time.perf_counter(), False, None
    last_eval: EvalResult | None = None  # the latest evaluation, and its step
    last_eval_step = -1
    ddp_model.train()
    try:
        while step < total_steps:
            for a in range(config.grad_accum):
                batch = micro_batch(step * micro_per_step + a * world + rank)
                sync = a == config.grad_accum - 1
                with contextlib.nullcontext() if sync else acc.no_sync(ddp_model):
                    rewards = ddp_model(**{k: v.to(acc.device) for k, v in batch.inputs.items()})
                    loss, stats = batch_loss(rewards, batch, config.center_coef)
                    acc.backward(loss / config.grad_accum)
                running += torch.stack([loss.detach().cpu(), stats["accuracy"].cpu(), torch.tensor(1.0)])
                samples += batch.size
            if config.max_grad_norm:
                acc.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if on_cpu:
                heap.trim()
            step += 1
            bar.update(1)

            if step % config.log_every == 0 or step == total_steps:
                mean = acc.reduce(running[:2] / running[2].clamp_min(1), "mean")
                last_loss = float(mean[0])
                log.metric(step, loss=last_loss, accuracy=float(mean[1]),
                           lr=scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{float(mean[1]):.3f}")
                running.zero_()
            if eval_set and (step % config.eval_every == 0 or step == total_steps):
                ev = _evaluate(acc, model, eval_set, config.batch_size * 2, config.share_prompt)
                last_eval, last_eval_step = ev, step
                log.metric(step, eval_accuracy=ev.accuracy, eval_loss=ev.loss)
                if best is None or (ev.accuracy, -ev.loss) > tuple(best):
                    best, bad_evals = (ev.accuracy, -ev.loss), 0
                    if config.keep_best:
                        _save(acc, model, out, best_step=step, eval_accuracy=ev.accuracy,
                              reward_stats=ev.reward_stats)
                else:
                    bad_evals += 1
                if config.patience and bad_evals >= config.patience:
                    stopped_early = True
            if step % config.eval_every == 0 or stopped_early or step == total_steps:
                _save_checkpoint(acc, out, config, data.data_hash, model, optimizer, scheduler,
                                 step, best, bad_evals)
            if stopped_early:
                log.log(f"early stop at step {step}: {bad_evals} evaluations without improvement")
                break
    except BaseException as exc:
        bar.close()
        log.fail(exc)
        raise
    bar.close()
    seconds = time.perf_counter() - t0
    if not (eval_set and config.keep_best and best is not None):
        if last_eval is None or last_eval_step != step:
            last_eval = _evaluate(acc, model, _stats_sample(train_set, config.seed),
                                  config.batch_size * 2, config.share_prompt, on="training sample")
        _save(acc, model, out, best_step=step, reward_stats=last_eval.reward_stats)
    summary = {"steps": step, "total_steps": total_steps, "final_loss": last_loss,
               "train_comparisons": len(train_set), "eval_comparisons": len(eval_set),
               "samples_per_s": samples * world / seconds if seconds > 0 else None,
               "seconds": seconds, "stopped_early": stopped_early,
               "best_eval_accuracy": best[0] if best else None,
               "best_eval_loss": -best[1] if best else None, "processes": world}
    log.finish("done", **summary)
    acc.wait_for_everyone()
    return {"run_id": log.id, "out": str(out), **summary}


def _comparisons(config: RMConfig, data: TrainingData) -> list[B.Comparison]:
    return B.comparisons_from(data, use_margin=config.use_margin, margin_values=config.margin_values,
                              soft_labels=config.soft_labels, use_rankings=config.use_rankings)


@dataclasses.dataclass
class EvalResult:
    accuracy: float
    loss: float
    reward_stats: dict  # mean and std of the rewards of every response scored


def _evaluate(acc, model: RewardModel, comparisons: list[B.Comparison], batch_size: int,
              share_prompt: bool, on: str = "held-out") -> EvalResult:
    shard = comparisons[acc.process_index::acc.num_processes]
    # float32 on the wire: some backends (MPS) have no float64
    totals = evaluate_comparisons(model, shard, batch_size, share_prompt).float().to(acc.device)
    totals = acc.reduce(totals, "sum")
    n_pairs, n_rewards = max(float(totals[0]), 1.0), max(float(totals[3]), 1.0)
    mean = float(totals[4]) / n_rewards
    std = math.sqrt(max(float(totals[5]) / n_rewards - mean * mean, 0.0))
    return EvalResult(float(totals[1]) / n_pairs, float(totals[2]) / n_pairs,
                      {"mean": mean, "std": std, "n": int(totals[3]), "on": on})


def _stats_sample(train_set: list[B.Comparison], seed: int, n: int = STATS_SAMPLE
                  ) -> list[B.Comparison]:
    """Without a held-out set, the reward's scale is measured on a fixed sample of training
    comparisons (enough for a mean and a spread; scoring all of them could cost minutes)."""
    if len(train_set) <= n:
        return train_set
    return random.Random(seed).sample(train_set, n)


def _save(acc, model: RewardModel, out: Path, **extra) -> None:
    if acc.is_main_process:
        model.save(out, **extra)
    acc.wait_for_everyone()


# --- checkpoints (resume after a crash) -----------------------------------------------------

def _save_checkpoint(acc, out: Path, config: RMConfig, data_hash: str, model: RewardModel,
                     optimizer, scheduler, step: int, best, bad_evals: int) -> None:
    if acc.is_main_process:
        folder = out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "best": best, "bad_evals": bad_evals, "data_hash": data_hash,
                 "config": {k: getattr(config, k) for k in _RESUME_KEYS},
                 "trainable": {n: p.detach().cpu() for n, p in model.trainable_parameters()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": torch.get_rng_state()}   # dropout masks continue as if never stopped
        tmp = folder / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(folder / STATE_FILE)  # a kill mid-write leaves the previous checkpoint
    acc.wait_for_everyone()


def _load_checkpoint(out: Path, config: RMConfig, data_hash: str, model: RewardModel,
                     optimizer, scheduler) -> dict | None:
    path = out / CHECKPOINT_DIR / STATE_FILE
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False, map_location="cpu")
    mine = {k: getattr(config, k) for k in _RESUME_KEYS}
    if state["config"] != mine or state["data_hash"] != data_hash:
        changed = sorted(k for k in mine if state["config"].get(k) != mine[k])
        changed += ["data"] if state["data_hash"] != data_hash else []
        raise ValueError(f"{out} holds a checkpoint of a different run (differs in "
                         f"{', '.join(changed)}): use another --out, or --no-resume")
    params = dict(model.trainable_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    return state
