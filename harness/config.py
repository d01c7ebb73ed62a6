"""Stage configs: one small dataclass per stage, JSON in and out, command-line options on top.

Every stage's config extends ``TrainSettings`` (what the harness itself reads: optimiser,
batches, steps, checkpoints, logging). It is stored with the run (``run.json``) and in every
checkpoint, and ``--config FILE`` sets any field from JSON before the options are applied.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

PRECISIONS = ("auto", "fp32", "bf16")   # TrainSettings.precision (harness/precision.py)


@dataclass
class TrainSettings:
    """What the harness reads; each stage's dataclass extends it (and may change defaults)."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4                     # examples per micro-batch per process
    grad_accum: int = 1                     # micro-batches per optimizer step
    max_steps: int | None = 100             # optimizer steps
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False    # recompute activations in backward: less memory, slower
    precision: str = "fp32"                 # fp32 | bf16 | auto: bf16 where fast (harness/precision.py)
    seed: int = 0
    log_every: int = 1
    save_every: int = 50                    # checkpoint every N steps (and always at the end)

    # Command-line options that set a field of a nested settings object: {"lora_r": ("lora", "r")}
    NESTED_OPTIONS: ClassVar[dict[str, tuple[str, str]]] = {}
    # Fields a resumed run may change (every other field must match the checkpoint's config).
    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset({"max_steps", "save_every", "log_every"})

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> dict:
        """The config as JSON values (what run.json and checkpoints hold)."""
        return json.loads(json.dumps(self.to_dict(), default=str))

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

    def check(self) -> None:
        """Refuse values no run can use (a stage adds its own checks)."""
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, "
                             f"not {self.precision!r}")


def build_config(cls: type[TrainSettings], options: dict[str, Any],
                 config_file: str | Path | None = None) -> TrainSettings:
    """A stage config from an optional JSON file, then command-line options on top.

    ``options`` maps field names (or ``cls.NESTED_OPTIONS`` keys) to values; None means "not
    given". An option that the stage does not have is an error (``--packing`` means nothing
    to DPO).
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
        owner, attr = (getattr(config, cls.NESTED_OPTIONS[key][0], None),
                       cls.NESTED_OPTIONS[key][1]) if key in cls.NESTED_OPTIONS else (config, key)
        if owner is None or not hasattr(owner, attr):
            raise ValueError(f"--{key.replace('_', '-')} is not an option of this trainer")
        setattr(owner, attr, value)
    return config
