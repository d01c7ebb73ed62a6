"""Reward-model training: ``train(RMConfig, TrainingData) -> summary``, on ``harness.run``.

The loop is plain (nanoGPT-like): for each optimizer step, ``grad_accum`` micro-batches per
process, gradients synchronised on the last one, clip, step. It runs unchanged under
``accelerate launch`` with several processes: every process builds the same length-bucketed
batch list (seeded) and takes every world-size-th batch, DDP averages the gradients, rank 0
writes the run folder. Evaluation on the held-out split every ``eval_every`` steps keeps the
best model in ``<out>/adapter`` (or ``<out>/model``) and stops early after ``patience``
evaluations without improvement. ``<out>/checkpoint/`` (the harness's, the same as every
policy stage's) lets a crashed or killed run resume where it stopped.

The job never opens the database: the CLI (or the server) ingests the run folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import torch

from annotate.trainingdata import TrainingData
from harness.config import TrainSettings, build_config
from harness.hub import MINILM
from harness.lora import LoraSettings
from harness.run import TrainingRun, deal, seed_everything

from . import batches as B
from .evaluate import evaluate_comparisons
from .losses import (centering_penalty, pairwise_loss, ranking_loss, ranking_pairs,
                     reduce_weighted, soft_pairwise_loss)
from .model import RewardModel

STATS_SAMPLE = 128  # training comparisons scored for the reward scale when nothing is held out


@dataclass
class RMConfig(TrainSettings):
    out: str = "runs/rm"
    # The defaults are the best recipe measured on a CPU (docs/rm-recipes.md: 5-fold CV on the
    # 1,500 HH pairs): MiniLM, LoRA on every linear layer (the pooler included: left frozen it
    # holds the loss at log 2), lr 2e-4, two epochs, 256 tokens.
    base: str = MINILM                  # backbone spec: minilm, smollm2-135m-instruct, folder, hub id
    kind: str | None = None             # decoder | encoder (default: from the checkpoint)
    max_length: int = 256               # tokens per (prompt, response); prompts cut from the left
    lora_r: int = 16                    # 0: full fine-tuning
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] | str | None = "all-linear"  # None: peft's default (attention q, v)
    train_modules: list[str] = field(default_factory=list)  # extra fully-trained modules (e.g. pooler)
    batch_size: int = 8                 # comparisons (pairs or rankings) per micro-batch per process
    lr: float = 2e-4
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"           # "constant" or a transformers.get_scheduler name
    epochs: float = 2.0
    max_steps: int | None = None        # optimizer steps; overrides epochs
    eval_fraction: float = 0.1          # prompts kept aside for evaluation (0: none)
    eval_every: int = 50                # steps between evaluations
    save_every: int = 50                # steps between checkpoints (and always at the end)
    patience: int | None = None         # evaluations without improvement before stopping
    keep_best: bool = True              # the saved model is the best evaluated one
    use_margin: bool = True             # Llama-2 margin m from the label's margin level
    margin_values: dict[str, float] | None = None  # level -> m (default: the store's values)
    soft_labels: bool = True            # BCE on an AI judge's soft_prob when the pair has one
    use_rankings: bool = True           # K-way tasks train as rankings (InstructGPT loss)
    center_coef: float = 0.0            # reward-centering penalty coefficient (0.01 is typical)
    bucket: bool = True                 # length-bucketed batches
    share_prompt: bool = True           # decoders: a comparison's responses share one prompt pass
    log_every: int = 1                  # a metrics line per step: the studio's progress moves
    # bf16 matrix products where the hardware makes them fast (CPUs with AMX or AVX-512 BF16,
    # GPUs), else fp32: the same 5-fold CV accuracy, 1.6-1.8x the speed (harness/precision.py)
    precision: str = "auto"
    resume: bool = True                 # continue from <out>/checkpoint when it exists

    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset({
        "out", "resume", "max_steps", "epochs", "save_every", "log_every", "eval_every",
        "patience", "keep_best"})

    def lora(self) -> LoraSettings | None:
        if self.lora_r <= 0:
            return None
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                            target_modules=self.lora_targets, modules_to_save=list(self.train_modules))

    def check(self) -> None:
        super().check()
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction (--eval-fraction) must be in [0, 1)")
        if min(self.eval_every, self.log_every) < 1:
            raise ValueError("eval_every and log_every must be at least 1")

    @classmethod
    def from_args(cls, args) -> "RMConfig":
        """``--config`` JSON (optional), then the ``train rm`` command-line options on top."""
        opt = partial(getattr, args)
        options = {"base": opt("base", None), "max_steps": opt("max_steps", None),
                   "batch_size": opt("batch_size", None), "grad_accum": opt("grad_accum", None),
                   "lr": opt("lr", None), "epochs": opt("epochs", None),
                   "max_length": opt("max_length", None), "lora_r": opt("lora_r", None),
                   "seed": opt("seed", None), "eval_fraction": opt("eval_fraction", None),
                   "eval_every": opt("eval_every", None), "save_every": opt("save_every", None),
                   "patience": opt("patience", None), "center_coef": opt("center", None),
                   "kind": opt("rm_kind", None), "out": opt("out", None),
                   "gradient_checkpointing": opt("gradient_checkpointing", None),
                   "precision": opt("precision", None)}
        if opt("full_finetune", False):
            options["lora_r"] = 0
        if opt("lora_targets", None):
            targets = args.lora_targets
            options["lora_targets"] = targets if targets == "all-linear" else targets.split(",")
        if opt("train_modules", None):
            options["train_modules"] = args.train_modules.split(",")
        if opt("margin_values", None):
            options["margin_values"] = _margin_values(args.margin_values)
        for flag, name in (("no_margin", "use_margin"), ("no_soft_labels", "soft_labels"),
                           ("no_rankings", "use_rankings"), ("no_resume", "resume")):
            if opt(flag, False):
                options[name] = False
        config = build_config(cls, options, opt("config", None))
        config.check()
        return config


def _margin_values(text: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(text).items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise ValueError('--margin-values: expected JSON like {"significantly": 1, "better": 0.5}') from None


# --- the loop -------------------------------------------------------------------------------

def train(config: RMConfig, data: TrainingData, *, eval_data: TrainingData | None = None,
          model: RewardModel | None = None, parents: tuple[str, ...] = ()) -> dict:
    """Train a reward model on ``data``; the run folder ``config.out`` receives everything.

    ``eval_data`` replaces the automatic held-out split. ``model`` trains a reward model built
    by the caller (e.g. ``RewardModel.on_backbone`` on the policy's base) instead of a fresh
    one from ``config.base``. Returns the run summary (also stored in run.json).
    """
    config.check()
    seed_everything(config.seed)  # the same fresh head on every process
    if model is None:
        model = RewardModel.from_spec(config.base, max_length=config.max_length,
                                      lora=config.lora(), kind=config.kind)
    if config.gradient_checkpointing:
        # keeps one layer's activations instead of all of them: SmolLM2 at 16 pairs x 256
        # tokens needs ~23 GB without it. Non-reentrant: the frozen embeddings need no grad.
        model.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    train_set, eval_set = split(config, data, eval_data)
    B.encode_all(model, train_set + eval_set)
    total_steps = partial(steps_for_epochs, config, len(train_set))
    run = TrainingRun(config, config.out, "rm", model, params=model.trainable_parameters(),
                      total_steps=total_steps, schedule=config.scheduler,
                      warmup_ratio=config.warmup_ratio,
                      parents=parents, data_hash=data.data_hash, label_ids=data.label_ids,
                      resume=config.resume)
    best = run.state.get("best")          # [accuracy, -loss] of the best evaluation
    bad_evals = run.state.get("bad_evals", 0)
    last_loss, last_eval, stopped_early, samples = None, None, False, 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    with run:
        run.log.log(f"train {len(train_set)} comparisons, held out {len(eval_set)}, "
                    f"{run.total_steps} steps, {run.accelerator.num_processes} process(es)")
        plan = partial(epoch_plan, [c.length for c in train_set], config)
        collate = partial(B.collate, model, share_prompt=config.share_prompt)
        batches = run.batches(train_set, collate, plan=plan)
        window = torch.zeros(3)  # loss, accuracy, micro-batches since the last log line
        run.model.train()
        while not run.done:
            for batch in run.accumulate(batches):
                rewards = run.model(**{k: v.to(run.device) for k, v in batch.inputs.items()})
                loss, stats = batch_loss(rewards, batch, config.center_coef)
                run.backward(loss)
                window += torch.stack([loss.detach().cpu(), stats["accuracy"].cpu(), torch.tensor(1.0)])
                samples += batch.size
            run.optimizer_step()

            if run.step % config.log_every == 0 or run.done:
                mean = window[:2] / window[2].clamp_min(1)
                last_loss = run.metric(loss=mean[0], accuracy=mean[1], lr=run.lr)["loss"]
                window.zero_()
            if eval_set and (run.step % config.eval_every == 0 or run.done):
                last_eval = evaluate_on(run, model, eval_set, config)
                run.metric(eval_accuracy=last_eval.accuracy, eval_loss=last_eval.loss, force=True)
                if best is None or [last_eval.accuracy, -last_eval.loss] > best:
                    best, bad_evals = [last_eval.accuracy, -last_eval.loss], 0
                    if config.keep_best:
                        run.on_main(partial(model.save, config.out, best_step=run.step,
                                            eval_accuracy=last_eval.accuracy,
                                            reward_stats=last_eval.reward_stats))
                else:
                    bad_evals += 1
                stopped_early = bool(config.patience and bad_evals >= config.patience)
            run.state = {"best": best, "bad_evals": bad_evals}
            if stopped_early:
                run.log.log(f"early stop at step {run.step}: {bad_evals} evaluations without improvement")
                break
            run.maybe_checkpoint()

        save = None
        if not (eval_set and config.keep_best and best is not None):
            if last_eval is None or last_eval.step != run.step:
                last_eval = evaluate_on(run, model, stats_sample(train_set, config.seed), config,
                                        on="training sample")
            save = partial(model.save, config.out, best_step=run.step,
                           reward_stats=last_eval.reward_stats)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        world = run.accelerator.num_processes
        summary = {"total_steps": run.total_steps, "final_loss": last_loss,
                   "train_comparisons": len(train_set), "eval_comparisons": len(eval_set),
                   "samples_per_s": samples * world / seconds if seconds > 0 else None,
                   "seconds": seconds, "cpu_seconds": cpu_seconds, "stopped_early": stopped_early,
                   "best_eval_accuracy": best[0] if best else None,
                   "best_eval_loss": -best[1] if best else None, "processes": world}
        run.finish(save=save, **summary)
    return {"run_id": run.log.id, "out": str(config.out), "steps": run.step, **summary}


# --- loss -------------------------------------------------------------------------------------

def batch_loss(rewards: torch.Tensor, batch, center_coef: float = 0.0
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A training batch's loss:  L = Σ_i w_i·L_i / Σ_i w_i  (+ c · mean(r²) when centering),
    and its pairwise accuracy.

    L_i is comparison i's loss: ``pairwise_loss`` (Touvron et al. 2023), or
    ``soft_pairwise_loss`` when an AI judge gave a probability (Lee et al. 2023), or
    ``ranking_loss`` for a K-way ranking (Ouyang et al. 2022); w_i its annotator agreement.
    ``batch`` holds ``comparisons`` and ``offsets`` (``batches.Batch``); rewards: [N responses]
    of the batch, in order. Returns (scalar loss, {"accuracy", "reward_mean"}).
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
        loss = loss + center_coef * centering_penalty(rewards).mean()
    stats = {"accuracy": wins.detach() / max(n_pairs, 1), "reward_mean": rewards.detach().mean()}
    return loss, stats


# --- data -----------------------------------------------------------------------------------

def split(config: RMConfig, data: TrainingData, eval_data: TrainingData | None
          ) -> tuple[list[B.Comparison], list[B.Comparison]]:
    """(training, held-out) comparisons: ``eval_data`` if given, else a seeded split by prompt."""
    comparisons = _comparisons(config, data)
    if eval_data is not None:
        train_set, eval_set = comparisons, _comparisons(config, eval_data)
    else:
        train_set, eval_set = B.split_holdout(comparisons, config.eval_fraction, config.seed)
    if not train_set:
        raise ValueError("no training comparisons: the data has no pair with a preference")
    return train_set, eval_set


def _comparisons(config: RMConfig, data: TrainingData) -> list[B.Comparison]:
    return B.comparisons_from(data, use_margin=config.use_margin, margin_values=config.margin_values,
                              soft_labels=config.soft_labels, use_rankings=config.use_rankings)


def steps_for_epochs(config: RMConfig, n_train: int, world: int) -> int:
    """``max_steps``, or the optimizer steps that make ``epochs`` passes over the data."""
    per_epoch = math.ceil(n_train / config.batch_size)  # micro-batches in one epoch
    return config.max_steps or max(1, math.ceil(config.epochs * per_epoch / (config.grad_accum * world)))


def epoch_plan(lengths: list[int], config: RMConfig, epoch: int, rank: int, world: int
               ) -> list[list[int]]:
    """This process's share of one epoch's length-bucketed batches (``harness.run`` plan)."""
    return deal(B.epoch_batches(lengths, config.batch_size, epoch, config.seed, config.bucket),
                rank, world)


def stats_sample(train_set: list[B.Comparison], seed: int, n: int = STATS_SAMPLE
                 ) -> list[B.Comparison]:
    """Without a held-out set, the reward's scale is measured on a fixed sample of training
    comparisons (enough for a mean and a spread; scoring all of them could cost minutes)."""
    if len(train_set) <= n:
        return train_set
    return random.Random(seed).sample(train_set, n)


# --- evaluation during training --------------------------------------------------------------

@dataclasses.dataclass
class EvalResult:
    step: int
    accuracy: float
    loss: float
    reward_stats: dict  # mean and std of the rewards of every response scored


def evaluate_on(run: TrainingRun, model: RewardModel, comparisons: list[B.Comparison],
                config: RMConfig, on: str = "held-out") -> EvalResult:
    """Accuracy, loss and reward scale over ``comparisons``, each process scoring its share."""
    acc = run.accelerator
    shard = comparisons[acc.process_index::acc.num_processes]
    # float32 on the wire: some backends (MPS) have no float64
    totals = evaluate_comparisons(model, shard, config.batch_size * 2, config.share_prompt)
    totals = acc.reduce(totals.float().to(acc.device), "sum")
    n_pairs, n_rewards = max(float(totals[0]), 1.0), max(float(totals[3]), 1.0)
    mean = float(totals[4]) / n_rewards
    std = math.sqrt(max(float(totals[5]) / n_rewards - mean * mean, 0.0))
    return EvalResult(run.step, float(totals[1]) / n_pairs, float(totals[2]) / n_pairs,
                      {"mean": mean, "std": std, "n": int(totals[3]), "on": on})
