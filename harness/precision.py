"""Mixed precision: matrix products in bfloat16 where the hardware makes them fast, the rest fp32.

The recipe is the usual one for GPUs (Micikevicius et al. 2018, "Mixed Precision Training";
bfloat16 needs no loss scaling): the trained weights, their gradients and the optimizer state
stay fp32; inside the forward pass ``torch.autocast`` runs the matrix products in bfloat16
(each rounded operand, an fp32 accumulator). A CPU with bfloat16 instructions multiplies
bfloat16 matrices much faster than fp32 ones: with AMX tiles (Intel Sapphire Rapids and later)
6-10x (976-1,136 vs 112-163 GFLOP/s on one thread of one benchmark machine), with AVX-512 BF16
(AMD Zen 4 and later, Intel Cooper Lake) 2.2x (208 vs 94 GFLOP/s on another). So
``precision="auto"`` picks bfloat16 on those CPUs and on GPUs that support it, and fp32
everywhere else (without those instructions PyTorch emulates bfloat16, which is slower).

What keeps the gain, and the numbers right:

* attention runs in fp32 on the CPU (``sdpa_fp32`` below): PyTorch's CPU flash-attention
  kernel is 2.3x *slower* in bfloat16 than in fp32 (forward + backward, 16 x 12 heads x 160
  tokens: 108 vs 48 ms), so q, k, v are upcast around it;
* the frozen base weights of fused LoRA layers keep a cached bfloat16 copy
  (``harness/fused_lora.py``), instead of being cast at every forward and backward;
* oneDNN's per-shape kernel caches are kept small (``bound_kernel_caches``), or the process
  grows with every new batch length;
* the reward head and LM heads stay fp32 (``fp32_forward``): a reward or a log-prob needs more
  than bfloat16's ~3 significant digits.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from .config import PRECISIONS
FP32_ATTENTION = "sdpa_fp32"   # the attention implementation name registered below


def autocast_forward(model: torch.nn.Module, device_type: str) -> Callable[[], None]:
    """Run ``model.forward`` under bf16 autocast, its floating outputs handed back in fp32;
    returns the function that undoes it. (Accelerate's ``mixed_precision`` does the same but
    fixes the precision once per process: a second run in another precision would fail.)"""
    from accelerate.utils import convert_outputs_to_fp32

    own = model.__dict__.get("forward")   # an instance-level forward to put back, if any
    inner = model.forward

    @functools.wraps(inner)
    def forward_bf16(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return inner(*args, **kwargs)

    model.forward = convert_outputs_to_fp32(forward_bf16)

    def undo() -> None:
        if own is None:
            model.__dict__.pop("forward", None)
        else:
            model.forward = own
    return undo


def fast_bf16(device: torch.device) -> bool:
    """True where bfloat16 matrix products are much faster than fp32 ones."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":   # AMX tiles or AVX-512 BF16 (torch.cpu's own probes of CPUID)
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False   # mps and others: fp32


def resolve(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where it is fast (``fast_bf16``), else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


# oneDNN (bf16 GEMMs on the CPU) keeps a compiled primitive per matrix shape, and PyTorch's
# ideep layer an LRU of them; both default to 1,024 entries. Length-bucketed batches bring new
# shapes at every step, so with the defaults the MiniLM reward model's RSS grew ~10 MB a step
# without end (711 MB at step 1, 1,392 MB at step 77; fp32 stays flat near 690). At 16 entries
# it stays flat (718 MB at step 37) and the bench ran faster too (12.4 vs 11.1 pairs/s: the
# kernels are cheap to rebuild, the page faults of a large cache are not). 0 crashes ideep.
KERNEL_CACHE_ENTRIES = "16"


def bound_kernel_caches() -> None:
    """Cap oneDNN's and ideep's per-shape kernel caches (unless the user set them). They are
    read when the first bf16 kernel is built, so this must run before any bf16 matrix product
    in the process (``TrainingRun`` calls it when it picks bf16 on the CPU)."""
    import os
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, KERNEL_CACHE_ENTRIES)


def sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention with q, k, v upcast to fp32 on the CPU (see the module's
    docstring: the CPU kernel is slower in bfloat16); elsewhere SDPA as it is.
    Shapes: q [B, h, T, d], k and v [B, h_kv, S, d] → ([B, T, h, d], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(),
                                              attention_mask, **kwargs)
    return out.to(query.dtype), weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(FP32_ATTENTION, sdpa_fp32)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FP32_ATTENTION, sdpa_mask)  # the same masks as sdpa


def attention_in_fp32(model: torch.nn.Module) -> int:
    """Switch every transformers model inside ``model`` that uses SDPA to ``sdpa_fp32``;
    returns how many were switched."""
    from transformers import PreTrainedModel

    _register()
    switched = 0
    for module in model.modules():
        if (isinstance(module, PreTrainedModel)
                and getattr(module.config, "_attn_implementation", None) == "sdpa"):
            module.set_attn_implementation(FP32_ATTENTION)
            switched += 1
    return switched


def fp32_forward(module: torch.nn.Module) -> torch.nn.Module:
    """Run ``module`` in fp32 even inside autocast (a reward head: a scalar needs more than
    bfloat16's ~3 significant digits, or close pairs tie). Floating inputs are upcast."""
    if "forward" in vars(module):   # already wrapped (or patched by someone else): leave it
        return module
    forward = module.forward

    def forward_fp32(*args, **kwargs):
        up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        device = next((t.device.type for t in (*args, *kwargs.values())
                       if isinstance(t, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return forward(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    module.forward = forward_fp32
    return module


def fp32_output_heads(model: torch.nn.Module) -> int:
    """Language-model heads in fp32 (``fp32_forward``): log-probabilities come from logits,
    and bf16 logits (~3 significant digits: steps of 0.06 at 16) would put noise of that size
    on every token's log-prob, and on DPO's and PPO's log-ratios. Returns how many."""
    from transformers import PreTrainedModel

    heads = {id(h): h for m in model.modules() if isinstance(m, PreTrainedModel)
             for h in [m.get_output_embeddings()] if isinstance(h, torch.nn.Module)}
    for head in heads.values():
        fp32_forward(head)
    return len(heads)
