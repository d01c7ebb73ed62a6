"""The pieces every policy trainer shares: accelerate, AdamW, accumulation, checkpoints, logging.

A trainer keeps its own loop readable (nanoGPT style) and hands the plumbing to ``TrainingRun``:

    with TrainingRun(config, out_dir, "dpo", model, tok, data_hash=...) as run:
        batches = run.batches(dataset, collate)           # endless, sharded, resumable
        while not run.done:
            for batch in run.accumulate(batches):         # grad_accum micro-batches
                loss = my_loss(run.model, batch)
                run.backward(loss)
            run.optimizer_step()                          # clip, step, zero_grad, step += 1
            run.metric(loss=loss.item())
            run.maybe_checkpoint()
        run.finish(final_loss=...)                        # adapter + policy.json + run.json

Everything that matters for a resume lives in ``out_dir/checkpoint/``: the trainable weights
(LoRA + any head, not the frozen base), the optimizer and scheduler, the step, the position
in the data, the RNG states, and a JSON ``state`` dict the trainer may fill (RS round, PPO's KL
coefficient). Running the same command again with the same ``--out`` continues from there.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from contextlib import nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from annotate.runlog import RunLog, read_run
from rewardmodel import heap

from .lm import LoraSettings, load_policy, save_policy

CHECKPOINT_DIR = "checkpoint"
# Config fields that may change between a run and its resume (everything else must match).
RESUMABLE_CHANGES = {"max_steps", "save_every", "log_every"}


@dataclass
class TrainSettings:
    """What every stage's config shares; each stage's dataclass extends it."""
    model: str = "smollm2-135m-instruct"   # base spec or a policy run folder to continue from
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0                   # linear warm-up, then constant
    batch_size: int = 4                     # sequences (or pairs) per micro-batch per process
    grad_accum: int = 1                     # micro-batches per optimizer step
    max_steps: int = 100                    # optimizer steps
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False    # recompute activations in backward: less memory, slower
    seed: int = 0
    log_every: int = 1
    save_every: int = 50                    # checkpoint every N steps (and always at the end)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        """Build from JSON (a stored run config, or --config); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        values = dict(values)
        for f in fields(cls):  # nested settings (lora, sampling, ...) arrive as dicts
            default = f.default_factory() if f.default_factory is not MISSING else None
            if isinstance(values.get(f.name), dict) and is_dataclass(default):
                values[f.name] = type(default)(**values[f.name])
        return cls(**values)


# Command-line options that set a field of a nested settings object in the config.
NESTED_OPTIONS = {"lora_r": ("lora", "r"), "lora_alpha": ("lora", "alpha"),
                  "max_new_tokens": ("sampling", "max_new_tokens"),
                  "max_prompt_tokens": ("sampling", "max_prompt_tokens"),
                  "temperature": ("sampling", "temperature"), "top_p": ("sampling", "top_p")}


def build_config(cls: type[TrainSettings], options: dict[str, Any],
                 config_file: str | Path | None = None) -> TrainSettings:
    """A stage config from an optional JSON file, then command-line options on top.

    ``options`` maps field names to values; None means "not given". An option that the
    stage does not have is an error (``--packing`` means nothing to DPO).
    """
    values = {}
    if config_file:
        try:
            values = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{config_file}: cannot read the config ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{config_file}: a config is a JSON object of fields")
    config = cls.from_dict(values)
    for key, value in options.items():
        if value is None:
            continue
        owner, attr = (getattr(config, NESTED_OPTIONS[key][0], None), NESTED_OPTIONS[key][1]) \
            if key in NESTED_OPTIONS else (config, key)
        if owner is None or not hasattr(owner, attr):
            raise ValueError(f"--{key.replace('_', '-')} is not an option of this trainer")
        setattr(owner, attr, value)
    return config


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs (every process gets the same seed; data is sharded)."""
    from accelerate.utils import set_seed
    set_seed(seed)


def load_for_training(config: TrainSettings):
    """(model, tokenizer): the policy with a fresh LoRA adapter (or the run folder's adapter, to
    continue training it), seeded first so the adapter's random init is reproducible."""
    seed_everything(config.seed)
    model, tok = load_policy(config.model, lora=config.lora, trainable=True)
    if config.gradient_checkpointing:
        # non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only (LoRA matrices, heads); the base stays frozen."""
    params = list(trainable_parameters(module).values())
    if not params:
        raise ValueError("the model has no trainable parameters (was it loaded with trainable=True?)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def warmup_then_constant(optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def run_parents(*folders: str | Path | None) -> list[str]:
    """Run ids of the folders that are prefstudio runs (policy to continue from, reward model)."""
    ids = []
    for folder in folders:
        if folder and (Path(folder) / "run.json").exists():
            ids.append(read_run(folder)["id"])
    return ids


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
    per_rank = math.ceil(n_items / world)
    order = (order * math.ceil(per_rank * world / n_items))[:per_rank * world]
    mine = order[rank::world]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


class TrainingRun:
    """Accelerator + optimizer + checkpoints + RunLog + progress bar for one training job."""

    def __init__(self, config: TrainSettings, out_dir: str | Path, kind: str,
                 model: torch.nn.Module, tok, *, policy: torch.nn.Module | None = None,
                 parents: Sequence[str] = (), data_hash: str | None = None,
                 label_ids: Sequence[str] = ()):
        from accelerate import Accelerator

        self.config, self.kind, self.tok = config, kind, tok
        self.dir = Path(out_dir)
        self.accelerator = Accelerator()
        self.is_main = self.accelerator.is_main_process
        self._on_cpu = self.accelerator.device.type == "cpu"
        if self._on_cpu:  # freed activations go back to the OS (rewardmodel/heap.py: why)
            heap.map_large_blocks()
        self._check_resumable()
        seed_everything(config.seed)
        self.log = RunLog(self.dir, kind, config.to_dict(), parents=parents, data_hash=data_hash,
                          label_ids=label_ids, is_main=self.is_main)
        self.policy = policy if policy is not None else model  # what save_policy writes
        optimizer = make_optimizer(model, config.lr, config.weight_decay)
        self.scheduler = warmup_then_constant(optimizer, config.warmup_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.step = 0                 # optimizer steps done
        self.state: dict[str, Any] = {}   # trainer-specific, JSON, saved with every checkpoint
        self._data_pos: dict[str, Any] = {}    # {"key", "epoch", "batch"} of the current data
        self.resumed = self._load_checkpoint()
        self.bar = tqdm(total=config.max_steps, initial=min(self.step, config.max_steps),
                        desc=kind, unit="step", disable=not self.is_main, dynamic_ncols=True)
        if self.resumed:
            self.log.log(f"resumed at step {self.step}")

    # --- context: a crash marks the run failed -------------------------------------------
    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.bar.close()
        if exc is not None:
            self.log.fail(exc)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def done(self) -> bool:
        return self.step >= self.config.max_steps

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The model without the DDP wrapper (for ``reference(...)``, generation, saving)."""
        return self.accelerator.unwrap_model(self.model)

    # --- data -------------------------------------------------------------------------------
    def batches(self, dataset: Sequence, collate: Callable[[list], Any], shuffle: bool = True,
                key: str = "train") -> Iterator[Any]:
        """Endless micro-batches over ``dataset`` for this process, epoch after epoch.

        The position (dataset key, epoch, batch) is checkpointed, so a resumed run continues
        with the next unseen batch instead of starting the epoch again. A new ``key`` (RS: one
        dataset per round) starts from the beginning.
        """
        if len(dataset) == 0:
            raise ValueError("no training examples")
        if self._data_pos.get("key") != key:
            self._data_pos = {"key": key, "epoch": 0, "batch": 0}
        acc, pos = self.accelerator, self._data_pos
        while True:
            plan = shard_batches(len(dataset), self.config.batch_size, pos["epoch"],
                                 self.config.seed, acc.process_index, acc.num_processes, shuffle)
            while pos["batch"] < len(plan):
                indices = plan[pos["batch"]]
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
        norm = self.accelerator.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if advance:
            self.advance()
        return float(norm)

    def advance(self) -> None:
        """One step done: the scheduler, the step counter and the bar move on."""
        if self._on_cpu:
            heap.trim()
        self.scheduler.step()
        self.step += 1
        self.bar.update(1)

    # --- metrics ----------------------------------------------------------------------------
    def metric(self, step: int | None = None, *, force: bool = False, **values: float) -> dict:
        """Average over processes, write to metrics.jsonl every ``log_every`` steps, show on the bar."""
        values = {k: float(v) for k, v in values.items() if v is not None}
        if self.accelerator.num_processes > 1 and values:
            t = torch.tensor(list(values.values()), device=self.device, dtype=torch.float64)
            values = dict(zip(values, self.accelerator.reduce(t, "mean").tolist()))
        step = self.step if step is None else step
        if force or step % max(1, self.config.log_every) == 0:
            self.log.metric(step, **values)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in list(values.items())[:4]}, refresh=False)
        return values

    # --- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / CHECKPOINT_DIR

    def maybe_checkpoint(self) -> None:
        every = self.config.save_every
        if every and self.step % every == 0 and not self.done:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        """Trainable weights, optimizer, scheduler, step, data position, RNG, trainer state."""
        self.accelerator.wait_for_everyone()
        if self.is_main:
            tmp = self.dir / (CHECKPOINT_DIR + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            weights = {k: v.detach().cpu() for k, v in trainable_parameters(self.unwrapped).items()}
            torch.save(weights, tmp / "trainable.pt")
            torch.save({"optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "rng": _rng_state()}, tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps({
                "kind": self.kind, "step": self.step, "data": self._data_pos, "state": self.state,
                "config": self.config.to_dict()}, indent=2, default=str))
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            tmp.rename(self.checkpoint_dir)   # the old checkpoint is replaced only when complete
        self.accelerator.wait_for_everyone()

    def _check_resumable(self) -> None:
        path = self.checkpoint_dir / "state.json"
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        if saved["kind"] != self.kind:
            raise ValueError(f"{self.dir} holds a {saved['kind']} run; use a new --out")
        old, new = saved["config"], json.loads(json.dumps(self.config.to_dict(), default=str))
        changed = sorted(k for k in set(old) | set(new)
                         if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
        if changed:
            raise ValueError(f"{self.dir} holds a checkpoint with a different config "
                             f"({', '.join(changed)}); use a new --out or the same options")

    def _load_checkpoint(self) -> bool:
        folder = self.checkpoint_dir
        if not (folder / "state.json").exists():
            return False
        saved = json.loads((folder / "state.json").read_text())
        weights = torch.load(folder / "trainable.pt", map_location="cpu")
        params = trainable_parameters(self.unwrapped)
        if set(weights) != set(params):
            raise ValueError(f"{folder}: checkpoint weights do not match the model's trainable "
                             "parameters (different model or LoRA settings?)")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        _set_rng_state(opt["rng"])
        self.step, self._data_pos, self.state = saved["step"], saved["data"], saved["state"]
        return True

    # --- the end ----------------------------------------------------------------------------
    def finish(self, **summary: Any) -> Path:
        """Save the adapter + ``policy.json`` into the run folder and mark the run done."""
        self.bar.close()
        self.save_checkpoint()   # so a later run with a larger --max-steps continues from here
        if self.is_main:
            policy = self.accelerator.unwrap_model(self.policy)
            save_policy(policy, self.tok, self.dir, getattr(policy, "base_spec", self.config.model),
                        extra={"kind": self.kind, "run_id": self.log.id, "step": self.step})
        self.log.finish("done", steps=self.step, **summary)
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
