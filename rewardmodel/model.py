"""A backbone with a scalar head: r(prompt, response) -> float.

Two kinds of backbone, one class:

* ``decoder`` (SmolLM2, Llama, GPT-2...): transformers' ``*ForSequenceClassification`` reads a
  linear head at the last non-padding token.
* ``encoder`` (MiniLM, BERT...): the pooled [CLS] vector through a linear head.

How text becomes input (chat template, truncation, packing) is ``encoding.py``.

Either way the model is a plain ``AutoModelForSequenceClassification`` with ``num_labels=1``,
LoRA-wrapped by peft with the head in ``modules_to_save``, so a saved run loads in plain
transformers + peft (see docs/rewardmodel.md).

A run folder holds ``rm.json`` (backbone spec, kind, max length, LoRA config) and either
``adapter/`` (peft adapter incl. the head) or ``model/`` (full fine-tuning).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from harness import hub, precision
from harness.lora import LoraSettings

from . import last_layer
from .encoding import (Encoded, encode_decoder, encode_encoder, pack_batch, pad_batch,
                       scoring_groups)

RM_FILE = "rm.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
HEAD_FILE = "head.pt"  # only for reward models that share another model's backbone


def detect_kind(config) -> str:
    """``decoder`` when the checkpoint is a causal LM, ``encoder`` otherwise (BERT-likes)."""
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in archs or "LMHead" in archs:
        return "decoder"
    if config.model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "deberta",
                             "deberta-v2", "electra", "mpnet", "albert", "modernbert"):
        return "encoder"
    return "decoder"


class RewardModel(nn.Module):
    """r(prompt, response): a sequence-classification model with one output, plus its tokenizer.

    ``encode`` -> ``collate`` (one sequence per response) or ``collate_shared_prompt``
    (decoders: responses packed behind their prompt) -> ``forward`` -> rewards (float32);
    ``score(prompts, responses)`` does all of it in batches, without gradients.
    """

    def __init__(self, model: nn.Module, tokenizer, *, kind: str, max_length: int = 512,
                 spec: str | None = None, lora: LoraSettings | None = None,
                 adapter: str | None = None, backbone_owner: nn.Module | None = None):
        super().__init__()
        if kind not in ("decoder", "encoder"):
            raise ValueError(f"kind must be decoder or encoder, not {kind!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = int(max_length)
        self.spec = spec
        self.lora = lora
        # A reward model on a shared backbone (see ``on_backbone``) switches the owner's peft
        # adapter to its own for the duration of a forward pass.
        self.adapter = adapter
        self._owner = [backbone_owner] if backbone_owner is not None else []  # not a submodule
        self.pad_id = _pad_id(tokenizer)
        # encoders: the last layer computes only the [CLS] position the head reads (last_layer.py)
        self._cls_layer = (last_layer.install(model) if kind == "encoder" else None,)  # not a submodule
        # under mixed precision the scalar reward is still computed in fp32: bf16 keeps ~3
        # significant digits, and close pairs would tie (harness/precision.py)
        precision.fp32_forward(_head(model))
        self._shared = False  # True when the backbone belongs to another model (on_backbone)
        # {"mean", "std", "n", "on"} of its rewards, measured when it was trained (rm.json)
        self.reward_stats: dict | None = None

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: str, *, max_length: int = 512, lora: LoraSettings | None = None,
                  kind: str | None = None, dropout: bool = False,
                  dtype: torch.dtype = torch.float32) -> "RewardModel":
        """A fresh reward model on the backbone ``spec`` (hub.resolve: name, folder, hub id).

        ``lora=None`` trains every weight (full fine-tuning); otherwise only the LoRA matrices
        and the head (plus ``lora.modules_to_save``) train.
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        folder = hub.resolve(spec)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        kind = kind or detect_kind(config)
        pad_id = _pad_id(tokenizer)
        model = _quiet_load(AutoModelForSequenceClassification, folder, num_labels=1,
                            pad_token_id=pad_id, dtype=dtype)
        model.config.pad_token_id = pad_id
        if not dropout:
            disable_dropout(model)
        if lora is not None:
            model = _wrap_lora(model, lora)
        return cls(model, tokenizer, kind=kind, max_length=max_length, spec=spec, lora=lora)

    @classmethod
    def on_backbone(cls, backbone: nn.Module, tokenizer, *, max_length: int = 512,
                    kind: str | None = None, adapter: str | None = None,
                    spec: str | None = None) -> "RewardModel":
        """A scalar head on a backbone that is already loaded, sharing its weights (no copy).

        ``backbone`` is a transformers model (e.g. the policy's ``*ForCausalLM``) or a peft
        model around one. Its inner transformer is reused as is; only a new head is created.
        With ``adapter``, the backbone is a ``PeftModel`` and the named adapter (added by the
        caller with ``backbone.add_adapter(name, LoraConfig(...))``) is switched on during this
        reward model's forward passes and switched back afterwards: the policy and its reward
        model then share one copy of the base weights, each with its own LoRA adapter.
        Training it (``train(config, data, model=rm)``) updates only that adapter and the head;
        without ``adapter`` only the head trains. ``spec`` names the base for ``save``/``load``
        (default: the folder the backbone was loaded from).
        """
        from transformers import AutoModelForSequenceClassification

        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        inner = getattr(base, base.base_model_prefix, base)
        config = type(base.config).from_dict(base.config.to_dict())
        config.num_labels = 1
        config.pad_token_id = _pad_id(tokenizer)
        with torch.device("meta"):  # allocate no second backbone: it is replaced just below
            model = AutoModelForSequenceClassification.from_config(config)
        setattr(model, model.base_model_prefix, inner)
        for name, child in model.named_children():
            if name != model.base_model_prefix:
                child.to_empty(device=next(inner.parameters()).device)
                _init_linear(child, config)
        kind = kind or detect_kind(base.config)
        owner = backbone if adapter is not None else None
        rm = cls(model, tokenizer, kind=kind, max_length=max_length, adapter=adapter,
                 backbone_owner=owner, spec=spec or getattr(base.config, "_name_or_path", None))
        rm._shared = True
        for _, p in rm.trainable_parameters():
            p.requires_grad_(True)
        return rm

    @classmethod
    def load_on_backbone(cls, run_dir: str | Path, backbone: nn.Module, tokenizer,
                         adapter_name: str = "reward") -> "RewardModel":
        """A trained reward model whose rm.json says ``shared_backbone``, on a loaded copy of
        the base it was trained on (a policy, usually a ``PeftModel``): its adapter (if it has
        one) joins the backbone as ``adapter_name``, its head is loaded and frozen. Without an
        adapter the head reads the bare base: score with the backbone's adapters disabled."""
        run_dir, info = Path(run_dir), read_info(run_dir)
        adapter = None
        if (run_dir / ADAPTER_DIR).exists():
            backbone.load_adapter(str(run_dir / ADAPTER_DIR), adapter_name=adapter_name,
                                  is_trainable=False)
            adapter = adapter_name
        rm = cls.on_backbone(backbone, tokenizer, kind=info["kind"], adapter=adapter,
                             max_length=info["max_length"], spec=info["backbone"])
        rm.head.load_state_dict(torch.load(run_dir / HEAD_FILE, weights_only=True))
        rm.head.requires_grad_(False)
        return rm.eval()

    @classmethod
    def load(cls, run_dir: str | Path, *, dtype: torch.dtype = torch.float32) -> "RewardModel":
        """Load a trained reward model from its run folder (``rm.json`` + adapter or model)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        run_dir, info = Path(run_dir), read_info(run_dir)
        if (run_dir / MODEL_DIR / "config.json").exists():
            folder = run_dir / MODEL_DIR
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype)
        else:
            folder = hub.resolve(info["backbone"])
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = _quiet_load(AutoModelForSequenceClassification, folder, num_labels=1,
                                pad_token_id=info["pad_token_id"], dtype=dtype)
            if (run_dir / HEAD_FILE).exists():  # a head trained on a shared backbone
                _head(model).load_state_dict(torch.load(run_dir / HEAD_FILE, weights_only=True))
            if (run_dir / ADAPTER_DIR).exists():
                from peft import PeftConfig, PeftModel
                adapter_config = PeftConfig.from_pretrained(run_dir / ADAPTER_DIR)
                if info.get("shared_backbone"):  # a causal-LM adapter; the head came from head.pt
                    adapter_config.task_type, adapter_config.modules_to_save = None, None
                model = PeftModel.from_pretrained(model, run_dir / ADAPTER_DIR, config=adapter_config)
        model.config.pad_token_id = info["pad_token_id"]
        disable_dropout(model)
        model.eval()
        lora = LoraSettings(**info["lora"]) if info.get("lora") else None
        rm = cls(model, tokenizer, kind=info["kind"], max_length=info["max_length"],
                 spec=info["backbone"], lora=lora)
        rm.reward_stats = info.get("reward_stats")
        return rm

    def save(self, run_dir: str | Path, **extra) -> None:
        """Write ``rm.json`` and the weights: the peft adapter (with the head) or a full model."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"backbone": self.spec, "kind": self.kind, "max_length": self.max_length,
                "pad_token_id": self.pad_id, "num_labels": 1,
                "head": {"module": _head_name(self.model), "reads": "last non-padding token"
                         if self.kind == "decoder" else "pooled [CLS]"},
                "lora": vars(self.lora) if self.lora else None, **extra}
        if self._shared:  # the owner's named adapter (if any) + our head
            if self._owner:
                _save_named_adapter(self._owner[0], self.adapter, run_dir / ADAPTER_DIR)
            torch.save(_head(self.model).state_dict(), run_dir / HEAD_FILE)
            info["shared_backbone"] = True
        elif self.lora is not None:
            self.model.save_pretrained(run_dir / ADAPTER_DIR)
        else:
            self.model.save_pretrained(run_dir / MODEL_DIR)
            self.tokenizer.save_pretrained(run_dir / MODEL_DIR)
        tmp = run_dir / (RM_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(run_dir / RM_FILE)

    # --- text -> token ids -> batches (encoding.py) -------------------------------------------

    def encode(self, prompts: Sequence[Sequence[dict]], responses: Sequence[str]) -> list[Encoded]:
        """Token ids (and token types for encoders) of each (prompt, response), truncated."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        encode = encode_decoder if self.kind == "decoder" else encode_encoder
        return encode(self.tokenizer, prompts, responses, self.max_length)

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """One right-padded sequence per response (``encoding.pad_batch``)."""
        return pad_batch(encoded, self.pad_id, with_types=self.kind == "encoder")

    def collate_shared_prompt(self, groups: Sequence[Sequence[Encoded]]) -> dict[str, torch.Tensor]:
        """Decoders: each group's responses behind one copy of their prompt
        (``encoding.pack_batch``); rewards come out in input order."""
        return pack_batch(groups, self.pad_id)

    # --- scoring ----------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                read_index: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards [B] for a padded batch [B, T] (``collate``), or rewards [N] for packed rows
        (``collate_shared_prompt``: 4-D mask, position ids and where to read each reward)."""
        with self._own_adapter(), last_layer.reading_cls(self._cls_layer[0]):
            if read_index is not None:
                seq_cls = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
                backbone = getattr(seq_cls, seq_cls.base_model_prefix)  # LoRA layers live inside
                hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False).last_hidden_state  # [R, T, H]
                picked = hidden.reshape(-1, hidden.shape[-1])[read_index]                     # [N, H]
                return _head(self.model)(picked)[:, 0].float()                               # [N]
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {"use_cache": False}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return logits[:, 0].float()  # [B, 1] -> [B]

    @torch.inference_mode()
    def score(self, prompts: Sequence[Sequence[dict]], responses: Sequence[str], *,
              batch_size: int = 16, tags: Sequence[Iterable[str]] | None = None) -> torch.Tensor:
        """Rewards [N] of N (prompt, response) pairs, ``batch_size`` responses per forward pass,
        batched by length. A decoder scores the responses to one prompt behind one copy of it
        (K samples per prompt in rejection sampling cost one prompt pass, not K). ``tags`` is
        accepted for the ensemble interface (a single model ignores it)."""
        was_training = self.training
        self.eval()
        encoded = self.encode(prompts, responses)
        groups = scoring_groups(encoded, share_prompt=self.kind == "decoder", batch_size=batch_size)
        rewards = torch.empty(len(encoded))
        batch: list[list[int]] = []
        for g in groups + [None]:  # None flushes the last batch
            if batch and (g is None or sum(map(len, batch)) + len(g) > batch_size):
                items = [[encoded[i] for i in members] for members in batch]
                inputs = (self.collate_shared_prompt(items) if self.kind == "decoder"
                          else self.collate([members[0] for members in items]))
                rewards[[i for members in batch for i in members]] = \
                    self(**{k: v.to(self.device) for k, v in inputs.items()}).cpu()
                batch = []
            if g is not None:
                batch.append(g)
        self.train(was_training)
        return rewards

    @property
    def head(self) -> nn.Module:
        """The linear head that turns the backbone's hidden state into the reward."""
        return _head(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """What the reward trainer optimises. On a shared backbone: the head and our own
        adapter only, whatever the owner has switched on for its own training."""
        if not self._shared:
            return [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        prefix = f"model.{self.model.base_model_prefix}."
        return [(n, p) for n, p in self.named_parameters()
                if not n.startswith(prefix) or (self.adapter and f".{self.adapter}." in n)]

    @contextlib.contextmanager
    def _own_adapter(self):
        if not self._owner:
            yield
            return
        owner = self._owner[0]
        previous = owner.active_adapter
        flags = {p: p.requires_grad for p in owner.parameters()}
        owner.set_adapter(self.adapter)
        try:
            yield
        finally:
            owner.set_adapter(previous)
            for p, flag in flags.items():  # set_adapter also flips requires_grad: undo that
                p.requires_grad_(flag)


def read_info(run_dir: str | Path) -> dict:
    """A reward-model run folder's ``rm.json``: backbone, kind, max length, LoRA, reward
    stats, ``shared_backbone`` (trained on another model's base)."""
    path = Path(run_dir) / RM_FILE
    if not path.exists():
        raise hub.ModelNotAvailable(f"{run_dir} is not a reward-model run folder (no {RM_FILE})")
    return json.loads(path.read_text())


# --- helpers --------------------------------------------------------------------------------

def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has no pad, eos or sep token to pad with")


def _quiet_load(auto_cls, folder, **kwargs):
    """from_pretrained without the expected 'score.weight newly initialised' report."""
    from transformers.utils import logging as hf_logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return auto_cls.from_pretrained(folder, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _wrap_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    from peft import get_peft_model
    # SEQ_CLS puts the head ("score" / "classifier") in modules_to_save: trained and saved
    return get_peft_model(model, lora.peft_config("SEQ_CLS"))


def _head_name(model: nn.Module) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("score", "classifier"):
        if hasattr(inner, name):
            return name
    raise ValueError(f"{type(inner).__name__} has no score/classifier head")


def _head(model: nn.Module) -> nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, _head_name(model))


def _init_linear(module: nn.Module, config) -> None:
    std = getattr(config, "initializer_range", 0.02)
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def _save_named_adapter(owner: nn.Module, name: str, target: Path) -> None:
    """Save one adapter of a multi-adapter peft model as a plain adapter folder ``target``."""
    import shutil
    import tempfile
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        owner.save_pretrained(tmp, selected_adapters=[name])
        source = Path(tmp) / name if name != "default" else Path(tmp)  # peft's layout
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(source), target)


def disable_dropout(model: nn.Module) -> None:
    """Reward models train without dropout: it makes r(x, y) noisy for the same input."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
