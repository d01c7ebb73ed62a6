"""``TrainingRun``: the plumbing under every trainer, so each trainer's loop stays readable.

    with TrainingRun(config, out_dir, "dpo", model, data_hash=...) as run:
        batches = run.batches(dataset, collate)           # endless, sharded, resumable
        while not run.done:
            for batch in run.accumulate(batches):         # grad_accum micro-batches
                loss = my_loss(run.model, batch)
                run.backward(loss)
            run.optimizer_step()                          # clip, step, schedule, step += 1
            run.metric(loss=loss.item())
            run.maybe_checkpoint()
        run.finish(save=..., final_loss=...)              # artifacts + run.json "done"

A crash inside the ``with`` marks the run failed. Everything a resume needs lives in
``out_dir/checkpoint/`` (one layout for every stage): ``trainable.pt`` (the trainable weights:
LoRA, heads; never the frozen base), ``optimizer.pt`` (optimizer, schedule, the Python, NumPy
and torch RNG states) and ``state.json`` (stage, step, position in the data, the config, the
data hash and a JSON ``state`` dict the trainer fills: RS round, PPO's β, the reward model's
best evaluation). Running the same command again with the same ``--out`` continues from there.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from annotate.runlog import RunLog

from . import fused_lora, heap, precision
from .config import TrainSettings

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"

Plan = Callable[[int, int, int], list[list[int]]]   # (epoch, rank, world) -> batches of indices


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs (every process gets the same seed; data is sharded)."""
    from accelerate.utils import set_seed
    set_seed(seed)


def make_schedule(optimizer, name: str, warmup_steps: int, total_steps: int):
    """The learning-rate schedule: ``constant`` (linear warm-up, then constant) or any
    ``transformers.get_scheduler`` name (cosine, linear, ...) over ``total_steps``."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)
    from transformers import get_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=total_steps)


def shard_batches(n_items: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world: int = 1, shuffle: bool = True) -> list[list[int]]:
    """This process's batches of item indices for one epoch.

    The permutation depends only on (seed, epoch), so every process agrees on it and a resumed
    run sees the same order. Short shards are padded by wrapping around (like DistributedSampler),
    so every process runs the same number of batches.
    """
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n_items, generator=g).tolist()
    else:
        order = list(range(n_items))
    mine = deal(order, rank, world)
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def shuffled_plan(n_items: int, batch_size: int, seed: int, shuffle: bool, epoch: int,
                  rank: int, world: int) -> list[list[int]]:
    """The default ``Plan``: ``shard_batches`` with the arguments in plan order."""
    return shard_batches(n_items, batch_size, epoch, seed, rank, world, shuffle)


def deal(items: list, rank: int, world: int) -> list:
    """Every ``world``-th item from ``rank`` on, the list first wrapped around to a multiple of
    ``world`` so that every process gets as many."""
    per_rank = math.ceil(len(items) / world)
    items = (items * math.ceil(per_rank * world / len(items)))[:per_rank * world]
    return items[rank::world]


class TrainingRun:
    """Accelerator + optimizer + schedule + checkpoints + RunLog + progress bar for one job.

    ``params``: the (name, parameter) pairs to train and checkpoint (default: every parameter
    that requires grad). ``total_steps`` (default ``config.max_steps``) ends the run; it may be
    a function of the number of processes (a stage that counts epochs). The schedule warms up
    over ``warmup_steps`` plus ``warmup_ratio`` of the total.
    ``resume=False`` ignores a checkpoint left in ``out_dir``.
    """

    def __init__(self, config: TrainSettings, out_dir: str | Path, kind: str,
                 model: torch.nn.Module, *, params: Sequence[tuple[str, torch.nn.Parameter]] = (),
                 total_steps: int | Callable[[int], int] | None = None, schedule: str = "constant",
                 warmup_steps: int = 0, warmup_ratio: float = 0.0, parents: Sequence[str] = (),
                 data_hash: str | None = None, label_ids: Sequence[str] = (), resume: bool = True):
        from accelerate import Accelerator

        self.config, self.kind, self.data_hash = config, kind, data_hash
        self.dir = Path(out_dir)
        # Without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) must be
        # told to use CPU DDP (gloo); otherwise each would silently train alone.
        gpu = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else None
        self.precision = precision.resolve(config.precision, torch.device(gpu or "cpu"))
        if self.precision == "bf16" and gpu is None:
            precision.bound_kernel_caches()
        self.accelerator = Accelerator(cpu=gpu is None)
        self.is_main = self.accelerator.is_main_process
        self._on_cpu = self.accelerator.device.type == "cpu"
        if self._on_cpu:  # freed activations go back to the OS (heap.py: why)
            heap.map_large_blocks()
        if callable(total_steps):
            total_steps = total_steps(self.accelerator.num_processes)
        self.total_steps = int(total_steps or config.max_steps)
        saved = self._saved_state() if resume else None
        seed_everything(config.seed)
        self.log = RunLog(self.dir, kind, config.to_dict(), parents=parents, data_hash=data_hash,
                          label_ids=label_ids, is_main=self.is_main)
        self.params = dict(params) or {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("the model has no trainable parameters (was it loaded with trainable=True?)")
        # AdamW over the trainable parameters only (LoRA matrices, heads); the base stays frozen
        optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.lr,
                                      weight_decay=config.weight_decay)
        warmup_steps += int(warmup_ratio * self.total_steps)
        self.scheduler = make_schedule(optimizer, schedule, warmup_steps, self.total_steps)
        fused_lora.install(model)   # peft's LoRA layers in two GEMMs (fused_lora.py: why)
        self._undo_autocast = lambda: None
        if self.precision == "bf16":   # autocast around the forward; weights, optimizer fp32
            if self._on_cpu:
                precision.attention_in_fp32(model)
            precision.fp32_output_heads(model)
            self._undo_autocast = precision.autocast_forward(model, self.accelerator.device.type)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.step = 0                      # optimizer steps done
        self.state: dict[str, Any] = {}    # trainer-specific, JSON, saved with every checkpoint
        self._data_pos: dict[str, Any] = {}    # {"key", "epoch", "batch"} of the current data
        self.resumed = saved is not None
        self.log.log(f"precision {self.precision} (config: {config.precision}), "
                     f"device {self.accelerator.device}")
        if saved is not None:
            self._load_checkpoint(saved)
            self.log.log(f"resumed from step {self.step}")
        self.bar = tqdm(total=self.total_steps, initial=min(self.step, self.total_steps),
                        desc=kind, unit="step", disable=not self.is_main, dynamic_ncols=True)

    # --- context: a crash marks the run failed -------------------------------------------
    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.bar.close()
        # the model leaves the run as it came: no autocast around its forward any more
        self._undo_autocast()
        fused_lora.drop_copies(self.unwrapped)
        if exc is not None:
            self.log.fail(exc)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The model without the DDP wrapper (reference passes, generation, saving)."""
        return self.accelerator.unwrap_model(self.model)

    # --- data -------------------------------------------------------------------------------
    def batches(self, dataset: Sequence, collate: Callable[[list], Any], shuffle: bool = True,
                key: str = "train", plan: Plan | None = None) -> Iterator[Any]:
        """Endless micro-batches over ``dataset`` for this process, epoch after epoch.

        ``plan(epoch, rank, world)`` gives this process's batches of indices for an epoch
        (default: ``shard_batches``, a seeded shuffle). The position (dataset key, epoch,
        batch) is checkpointed, so a resumed run continues with the next unseen batch. A new
        ``key`` (RS: one dataset per round) starts from the beginning.
        """
        if len(dataset) == 0:
            raise ValueError("no training examples")
        if plan is None:
            plan = partial(shuffled_plan, len(dataset), self.config.batch_size, self.config.seed,
                           shuffle)
        if self._data_pos.get("key") != key:
            self._data_pos = {"key": key, "epoch": 0, "batch": 0}
        acc, pos = self.accelerator, self._data_pos
        while True:
            epoch_plan = plan(pos["epoch"], acc.process_index, acc.num_processes)
            while pos["batch"] < len(epoch_plan):
                indices = epoch_plan[pos["batch"]]
                pos["batch"] += 1
                yield _to_device(collate([dataset[i] for i in indices]), self.device)
            pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0

    def accumulate(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``grad_accum`` micro-batches; gradients sync across processes on the last one only."""
        n = self.config.grad_accum
        for i in range(n):
            sync = i == n - 1
            with nullcontext() if sync else self.accelerator.no_sync(self.model):
                yield next(batches)

    # --- optimisation -----------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's mean loss (scaled so accumulation averages)."""
        self.accelerator.backward(loss / self.config.grad_accum)

    def optimizer_step(self, advance: bool = True) -> float:
        """Clip, step, zero the gradients, advance the step counter. Returns the grad norm.

        ``advance=False`` for trainers whose step holds several updates (PPO: epochs ×
        minibatches per rollout batch); they call ``advance()`` once the step is done.
        """
        norm = 0.0
        if self.config.max_grad_norm:   # 0: no clipping
            norm = self.accelerator.clip_grad_norm_(list(self.params.values()),
                                                    self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if advance:
            self.advance()
        return float(norm)

    def advance(self) -> None:
        """One step done: the schedule, the step counter and the bar move on."""
        if self._on_cpu:
            heap.trim()
        self.scheduler.step()
        self.step += 1
        self.bar.update(1)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # --- metrics ----------------------------------------------------------------------------
    def metric(self, step: int | None = None, *, force: bool = False, **values: float) -> dict:
        """Average over processes; write to metrics.jsonl every ``log_every`` steps (and at the
        last step, or with ``force``); show on the bar. Every process must call it."""
        values = {k: float(v) for k, v in values.items() if v is not None}
        if self.accelerator.num_processes > 1 and values:
            # float32 on the wire: some backends (MPS) have no float64
            t = torch.tensor(list(values.values()), device=self.device, dtype=torch.float32)
            values = dict(zip(values, self.accelerator.reduce(t, "mean").tolist()))
        step = self.step if step is None else step
        if force or step % max(1, self.config.log_every) == 0 or step == self.total_steps:
            self.log.metric(step, **values)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in list(values.items())[:4]}, refresh=False)
        return values

    def on_main(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the main process only (writing the run folder); the others wait."""
        if self.is_main:
            fn()
        self.accelerator.wait_for_everyone()

    # --- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / CHECKPOINT_DIR

    def maybe_checkpoint(self) -> None:
        every = self.config.save_every
        if every and self.step % every == 0 and not self.done:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        """Trainable weights, optimizer, schedule, RNG, step, data position, trainer state."""
        self.accelerator.wait_for_everyone()
        self.on_main(self._write_checkpoint)

    def _write_checkpoint(self) -> None:
        tmp = self.dir / (CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({k: v.detach().cpu() for k, v in self.params.items()}, tmp / "trainable.pt")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state()}, tmp / "optimizer.pt")
        (tmp / STATE_FILE).write_text(json.dumps({
            "kind": self.kind, "step": self.step, "data": self._data_pos, "state": self.state,
            "data_hash": self.data_hash, "config": self.config.to_json()}, indent=2))
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        tmp.rename(self.checkpoint_dir)   # the old checkpoint is replaced only when complete

    def _saved_state(self) -> dict | None:
        """The checkpoint's state.json, after checking that this run may continue it."""
        path = self.checkpoint_dir / STATE_FILE
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        if saved["kind"] != self.kind:
            raise ValueError(f"{self.dir} holds a {saved['kind']} run; use a new --out")
        old, new = saved["config"], self.config.to_json()
        changed = sorted(k for k in set(old) | set(new)
                         if k not in self.config.RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if self.data_hash and saved.get("data_hash") and saved["data_hash"] != self.data_hash:
            changed.append("data")
        if changed:
            raise ValueError(f"{self.dir} holds a checkpoint of a run with a different config "
                             f"({', '.join(changed)}); use a new --out or the same options")
        return saved

    def _load_checkpoint(self, saved: dict) -> None:
        folder = self.checkpoint_dir
        weights = torch.load(folder / "trainable.pt", map_location="cpu")
        if set(weights) != set(self.params):
            raise ValueError(f"{folder}: checkpoint weights do not match the model's trainable "
                             "parameters (different model or LoRA settings?)")
        with torch.no_grad():
            for name, value in weights.items():
                self.params[name].copy_(value.to(self.params[name].device))
        opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        _set_rng_state(opt["rng"])   # dropout masks and sampling continue as if never stopped
        self.step, self._data_pos, self.state = saved["step"], saved["data"], saved["state"]

    # --- the end ----------------------------------------------------------------------------
    def finish(self, save: Callable[[], Any] | None = None, **summary: Any) -> Path:
        """Checkpoint (a later run with a larger --max-steps continues from here), ``save``
        the artifacts on the main process, and mark the run done with ``summary``."""
        self.bar.close()
        self.save_checkpoint()
        if save is not None:
            self.on_main(save)
        self.log.finish("done", steps=self.step, precision=self.precision, **summary)
        self.accelerator.wait_for_everyone()
        return self.dir


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _rng_state() -> dict:
    import numpy as np
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    import numpy as np
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
