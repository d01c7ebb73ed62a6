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
    b [out] or None, A [r, in], B [out, r] → y [..., out]."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        x2 = x.reshape(-1, x.shape[-1])                                           # [N, in]
        h = x2 @ lora_a.t()                                                       # [N, r]
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, lora_b.t(), alpha=scaling)                                    # [N, out]
        ctx.save_for_backward(x2, h, weight, lora_a, lora_b)
        ctx.scaling, ctx.x_shape = scaling, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, h, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])                                      # [N, out]
        u = (g @ lora_b).mul_(s)                                                  # [N, r]
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(u, lora_a).view(ctx.x_shape)            # [..., in]
        if ctx.needs_input_grad[3]:
            grad_a = u.t() @ x2                                                   # [r, in]
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ h).mul_(s)                                          # [out, r]
        return grad_x, None, None, grad_a, grad_b, None


def _fusable(layer, x: torch.Tensor, args, kwargs) -> str | None:
    """The active adapter's name when ``LoraLinear`` computes exactly what peft would."""
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
            or x.dtype != base.weight.dtype or x.dtype != layer.lora_A[name].weight.dtype):
        return None
    return name


def _fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _fusable(layer, x, args, kwargs)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.get_base_layer()
    return LoraLinear.apply(x, base.weight, base.bias, layer.lora_A[name].weight,
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
