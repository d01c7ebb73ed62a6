"""Loading a causal LM (+ LoRA adapter), rendering chats, and per-token log-probabilities.

One base model in memory: the policy is a LoRA adapter on the base, and the reference policy is
the same base with the adapter disabled (``with reference(model): ...``).
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from harness.hub import DEFAULT_POLICY, resolve
from harness.lora import LoraSettings

POLICY_FILE = "policy.json"  # in a policy run folder: {"base": SPEC, "adapter": "adapter"}


POLICY_LORA_TARGETS = "all-linear"  # a policy's adapter, unless told otherwise: every linear layer


def policy_source(spec: str | None) -> tuple[str, str | None]:
    """(base spec, adapter folder or None) for a model spec or a policy run folder."""
    spec = spec or DEFAULT_POLICY
    path = Path(spec)
    if (path / POLICY_FILE).exists():
        info = json.loads((path / POLICY_FILE).read_text())
        return info["base"], str(path / info.get("adapter", "adapter"))
    if (path / "adapter_config.json").exists():  # a bare PEFT adapter folder
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return base, str(path)
    return spec, None


def load_tokenizer(spec: str | None):
    from transformers import AutoTokenizer

    base, _ = policy_source(spec)
    tok = AutoTokenizer.from_pretrained(resolve(base))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation appends on the right
    return tok


def load_policy(spec: str | None = None, adapter: str | None = None, *,
                lora: LoraSettings | None = None, trainable: bool = False,
                dtype: torch.dtype = torch.float32):
    """Load the base model, then an existing adapter (``adapter`` or from a run folder) or a
    fresh LoRA adapter (``lora``). Returns (model, tokenizer).

    With ``trainable=False`` the model is in eval mode with gradients off.
    """
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base, run_adapter = policy_source(spec)
    adapter = adapter or run_adapter
    if adapter and (Path(adapter) / POLICY_FILE).exists():
        adapter = policy_source(adapter)[1]
    tok = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(resolve(base), dtype=dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif lora is not None:
        model = get_peft_model(model, lora.peft_config("CAUSAL_LM", POLICY_LORA_TARGETS))
    model.train(trainable)
    if not trainable:
        model.requires_grad_(False)
    model.base_spec = base  # remembered for saving run folders
    return model, tok


def save_policy(model, tok, out_dir: str | Path, base_spec: str, extra: dict | None = None) -> Path:
    """Save the LoRA adapter and ``policy.json`` so ``load_policy(out_dir)`` restores it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "adapter")
    tok.save_pretrained(out / "adapter")
    info = {"base": base_spec, "adapter": "adapter", **(extra or {})}
    (out / POLICY_FILE).write_text(json.dumps(info, indent=2))
    return out


@contextmanager
def reference(model):
    """The reference policy: the same weights with the LoRA adapter switched off."""
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with ctx:
        yield model


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log π(x_t | x_<t) for t = 1..T-1.

    input_ids, attention_mask: [B, T]  →  [B, T-1] (position t-1 holds the log-prob of token t)
    Left padding is fine: position ids follow the attention mask.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids, use_cache=False).logits[:, :-1]   # [B, T-1, V]
    return logprobs_from_logits(logits, input_ids[:, 1:])


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gather log-softmax at the labels without materialising [B, T, V] log-probs twice.

    logits: [B, T, V], labels: [B, T] → [B, T]
    """
    logits = logits.float()
    return torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      prompt_len: int, temperature: float = 1.0, hidden: bool = False):
    """log π of the response tokens only, for the layout prompt left-padded to P + response
    right-padded to R (``Rollout``, DPO batches).

    input_ids, attention_mask: [B, P + R]  →  [B, R] (mask it with the response mask)
    Only the R + 1 last positions go through the LM head (``logits_to_keep``): the prompt's
    logits are never materialised, which is most of the memory of a [B, T, V] float tensor.
    ``temperature``: log-probs of the temperature-scaled distribution (what sampling drew
    from). ``hidden=True`` also returns the last hidden states that predict each response
    token, [B, R, H] (what a value head reads): ``(logprobs, hidden)``.
    """
    R = input_ids.shape[1] - prompt_len
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, logits_to_keep=R + 1, output_hidden_states=hidden)
    logits = out.logits[:, :-1]                                                   # [B, R, V]
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = logprobs_from_logits(logits, input_ids[:, prompt_len:])
    if not hidden:
        return logprobs
    return logprobs, out.hidden_states[-1][:, prompt_len - 1:-1]                   # [B, R, H]
