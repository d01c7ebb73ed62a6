"""A LoRA linear layer in two matrix products instead of three products and two passes over
its output, for peft's LoRA layers while they train (and score) on the frozen base.

peft computes ``y = base(x) + lora_B(lora_A(x)) * s``: the low-rank product writes a second
[N, out] tensor, the scaling reads and writes it again, the sum a third time, and backward
repeats the scaling. ``LoraLinear`` computes the same function (Hu et al. 2021, eq. 3):

    h = x Aᵀ                      [N, r]
    y = x Wᵀ + b, then y += s · h Bᵀ  (one GEMM accumulating into y: BLAS beta = 1)

and in backward, with the frozen W and b getting no gradient (no weight-gradient GEMM for them):

    g_B = s · gᵀ h,   u = s · g B,   g_A = uᵀ x,   g_x = g W + u A  (the second term accumulated)

The scaling moves to the [N, r] side, so the result equals peft's up to float rounding. On the
MiniLM reward model (BENCHMARKS.md) elementwise ops fell from 17.6 % to 2.8 % of a step's op
time, and the step ran 1.38× faster.

``install(model)`` gives every peft ``lora.Linear`` of ``model`` this forward for the cases it
covers exactly (one active vanilla adapter, no dropout, not merged, an ``nn.Linear`` base whose
weight is frozen); anything else (several adapters, DoRA, dropout, a trainable base, adapters
disabled) falls through to peft's own forward, checked at every call. Setting the environment
variable ``PREFSTUDIO_FUSED_LORA=0`` leaves peft's forward alone (for benchmarks' ablations).
"""
from __future__ import annotations

import os
import types

import torch
from torch import nn


class LoraLinear(torch.autograd.Function):
    """y = x Wᵀ + b + s · (x Aᵀ) Bᵀ with W, b frozen. Shapes: x [..., in], W [out, in],
    b [out] or None, A [r, in], B [out, r] → y [..., out].

    Under autocast (``harness/precision.py``) W and b arrive as the layer's cached bfloat16
    copy; x, A and B are cast to it, the products run in bfloat16, and the gradients of x, A
    and B go back in their own dtypes (A and B: fp32, the optimizer's)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        dtype = weight.dtype                                                      # compute dtype
        x2 = _cast_once(x.reshape(-1, x.shape[-1]), dtype)                        # [N, in]
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        h = x2 @ a.t()                                                            # [N, r]
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, b.t(), alpha=scaling)                                         # [N, out]
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scaling, ctx.x_shape, ctx.dtypes = scaling, x.shape, (x.dtype, lora_a.dtype, lora_b.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scaling
        x_dtype, a_dtype, b_dtype = ctx.dtypes
        g = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)                     # [N, out]
        u = (g @ lora_b).mul_(s)                                                  # [N, r]
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(u, lora_a).view(ctx.x_shape).to(x_dtype)  # [..., in]
        if ctx.needs_input_grad[3]:
            grad_a = (u.t() @ x2).to(a_dtype)                                     # [r, in]
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ h).mul_(s).to(b_dtype)                              # [out, r]
        return grad_x, None, None, grad_a, grad_b, None


_last_cast: list = [None, None, -1, None]   # [input, dtype, its version, the cast copy]


def _cast_once(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``; the query, key and value layers read the same input, so the last
    cast is kept (one copy saved for their backward instead of three). The entry holds ``x``
    itself, so an identity match cannot be a new tensor at a reused address."""
    if x.dtype == dtype:
        return x
    src, kind, version, copy = _last_cast
    current = None if x.is_inference() else x._version   # inference tensors have no counter
    if src is not None and src.data_ptr() == x.data_ptr() and src.shape == x.shape \
            and src.stride() == x.stride() and kind == dtype and version == current:
        return copy
    copy = x.to(dtype)
    _last_cast[:] = [x, dtype, current, copy]
    return copy


def _fusable(layer, x: torch.Tensor, args, kwargs, autocast: torch.dtype | None) -> str | None:
    """The active adapter's name when ``LoraLinear`` computes exactly what peft would
    (``autocast``: the autocast dtype in force, or None)."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    base = layer.get_base_layer()
    if (name in getattr(layer, "lora_variant", {}) or type(base) is not nn.Linear
            or not isinstance(layer.lora_dropout[name], nn.Identity)
            or getattr(layer, "fan_in_fan_out", False)
            or layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None
            or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
            or layer.lora_A[name].weight.dtype != base.weight.dtype
            or x.dtype not in (base.weight.dtype, autocast)):
        return None
    return name


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _frozen_weights(base: nn.Linear, dtype: torch.dtype | None):
    """The base layer's (weight, bias), in ``dtype`` under autocast: a copy made once and
    kept on the layer while the weights stay the same (they are frozen; a load or merge
    changes their version or storage and makes a new copy)."""
    if dtype is None or dtype == base.weight.dtype:
        return base.weight, base.bias
    key = (dtype, base.weight.data_ptr(), base.weight._version,
           None if base.bias is None else (base.bias.data_ptr(), base.bias._version))
    cached = base.__dict__.get("_prefstudio_lowp")
    if cached is None or cached[0] != key:
        bias = None if base.bias is None else base.bias.detach().to(dtype)
        cached = (key, base.weight.detach().to(dtype), bias)
        base.__dict__["_prefstudio_lowp"] = cached   # a plain attribute: not in state_dict
    return cached[1], cached[2]


def _fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    autocast = _autocast_dtype(x)
    name = _fusable(layer, x, args, kwargs, autocast)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.get_base_layer()
    weight, bias = _frozen_weights(base, autocast)
    with torch.autocast(x.device.type, enabled=False):   # the dtypes are chosen above
        return LoraLinear.apply(x, weight, bias, layer.lora_A[name].weight,
                                layer.lora_B[name].weight, float(layer.scaling[name]))


def enabled() -> bool:
    return os.environ.get("PREFSTUDIO_FUSED_LORA", "1") != "0"


def install(model: nn.Module) -> int:
    """Give each peft LoRA ``Linear`` in ``model`` the fused forward; returns how many."""
    if not enabled():
        return 0
    try:
        from peft.tuners.lora.layer import Linear as PeftLoraLinear
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, PeftLoraLinear) and "forward" not in vars(module):
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def drop_copies(model: nn.Module) -> None:
    """Free the bfloat16 copies of frozen weights kept for autocast (a run's end)."""
    _last_cast[:] = [None, None, -1, None]
    for module in model.modules():
        module.__dict__.pop("_prefstudio_lowp", None)
