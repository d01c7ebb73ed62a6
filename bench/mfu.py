"""The CPU's ceiling: its fp32 matmul peak, the model FLOPs of a training sample, and MFU.

    python bench/mfu.py                    # the peak of this CPU, and FLOPs per sample of both benches
    python bench/mfu.py --matrix 2048 --repeats 10

Model FLOPs utilisation (Chowdhery et al. 2022, "PaLM", appendix B) = the model FLOPs a
training sample needs × samples per second ÷ the machine's peak. The peak is measured, not
taken from a data sheet: the best of ``--repeats`` ``torch.matmul`` of two n×n fp32 matrices
(2n³ FLOPs each) with every torch thread. On a loaded machine the best repeat is the one that
got the most of the cores; the peak is then low and the MFU high, so both are printed.

Model FLOPs are counted from the architecture (every ``nn.Linear`` of a meta-device copy of
the model) and the real token counts, implementation-independent, so the same for both sides:

* a frozen weight matrix of N entries costs 2N per token forward and 2N backward (the input's
  gradient; no weight gradient), a LoRA pair A, B (N = r·(in + out)) 6N (forward, input
  gradient, weight gradients): 4·N_frozen + 6·N_lora per token for a trained pass, 2·N for a
  forward-only (reference) pass;
* attention: 4·T²·d per layer forward (QKᵀ and PV, d = heads × head size) and 8·T²·d backward
  over every (query, key) pair the mask allows (T² for an encoder, T(T+1)/2 causal);
* every layer at every real token of every sequence (no padding; a DPO prompt counted with
  each of its two replies, as if each sequence stood alone), heads where the loss reads them:
  the reward head (and BERT's pooler) at one token, the LM head at each reply token.

prefstudio skips some of this work (the last encoder layer at [CLS] only, one prompt pass per
DPO pair), so its MFU can exceed the hardware's actual utilisation; the model FLOPs, and so
the ratio of the two sides' MFU, equal the ratio of their throughputs.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn

HEADS = ("classifier", "score", "lm_head")


def matmul_peak(n: int = 2048, repeats: int = 10, threads: int | None = None,
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of the best of ``repeats`` n×n matrix products in ``dtype`` (one warm-up first)."""
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


@dataclass
class Shape:
    """What the FLOP count needs of a model: per-token linear weights (frozen and LoRA), the
    attention width, the layer count, the heads' sizes."""
    layer_weights: int        # entries of every linear matrix inside the layers
    layer_lora: int           # r·(in + out) summed over the LoRA-targeted layer matrices
    attn_width: int           # heads × head size (query width)
    layers: int
    once_weights: int = 0     # matrices applied at the read token only (BERT's pooler)
    once_lora: int = 0
    head_weights: int = 0     # the reward head (trained) or the LM head (frozen), per read token


def model_shape(spec: str, lora_r: int, lora_targets: str | list[str] | None, causal_lm: bool) -> Shape:
    """``Shape`` of the backbone ``spec`` with LoRA rank ``lora_r`` on ``lora_targets``
    ("all-linear": every linear but the head; None: peft's default for the architecture)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from harness.hub import resolve

    config = AutoConfig.from_pretrained(resolve(spec), **({} if causal_lm else {"num_labels": 1}))
    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = auto.from_config(config)
    if lora_targets is None:
        lora_targets = DEFAULTS[config.model_type]
    shape = Shape(0, 0, config.num_attention_heads * getattr(
        config, "head_dim", config.hidden_size // config.num_attention_heads),
        config.num_hidden_layers)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        weights = module.in_features * module.out_features
        if leaf in HEADS:
            shape.head_weights += weights
            continue
        lora = (lora_targets == "all-linear" or leaf in lora_targets) and lora_r > 0
        low_rank = lora_r * (module.in_features + module.out_features) if lora else 0
        if ".layer" in name:
            shape.layer_weights += weights
            shape.layer_lora += low_rank
        else:                    # the pooler: [CLS] only
            shape.once_weights += weights
            shape.once_lora += low_rank
    return shape


def trained_pass(s: Shape, tokens: int, causal: bool, read_tokens: int, head_trained: bool) -> float:
    """Model FLOPs of forward + backward over one sequence of ``tokens`` real tokens."""
    pairs = tokens * (tokens + 1) / 2 if causal else tokens ** 2
    head = (6 if head_trained else 4) * s.head_weights * read_tokens
    return ((4 * s.layer_weights + 6 * s.layer_lora) * tokens + 12 * pairs * s.attn_width * s.layers
            + (4 * s.once_weights + 6 * s.once_lora) + head)


def forward_pass(s: Shape, tokens: int, causal: bool, read_tokens: int) -> float:
    """Model FLOPs of a forward pass (a reference model's) over one sequence."""
    pairs = tokens * (tokens + 1) / 2 if causal else tokens ** 2
    return (2 * (s.layer_weights + s.layer_lora) * tokens + 4 * pairs * s.attn_width * s.layers
            + 2 * s.once_weights + 2 * s.head_weights * read_tokens)


def rm_flops_per_pair(s: Shape, pair_lengths: list[tuple[int, int]], causal: bool = False) -> float:
    """Mean model FLOPs of one reward-model training pair: both sequences, forward + backward."""
    total = sum(trained_pass(s, n, causal, 1, head_trained=True) for pair in pair_lengths for n in pair)
    return total / len(pair_lengths)


def dpo_flops_per_pair(s: Shape, pairs: list[tuple[int, int, int]]) -> float:
    """Mean model FLOPs of one DPO pair (prompt P, chosen C, rejected R tokens): the policy's
    forward + backward and the reference's forward over prompt + chosen and prompt + rejected."""
    total = 0.0
    for p, c, r in pairs:
        for reply in (c, r):
            total += trained_pass(s, p + reply, True, reply, head_trained=False)
            total += forward_pass(s, p + reply, True, reply)
    return total / len(pairs)


def matmul_peaks(threads: int | None = None, before: dict[str, float] | None = None) -> dict[str, float]:
    """{"fp32": FLOP/s, "bf16": FLOP/s}: each side's MFU is taken against the peak of the
    precision its matrix products ran in. ``before``: the same run's measurement from before
    its rounds; the higher of the two is kept, since a virtual machine's clock moves with its
    neighbours (one core of the AMD benchmark machine: 56 to 95 GFLOP/s fp32 within an hour;
    a peak caught in a slow minute put a side's MFU above 100 %)."""
    now = {"fp32": matmul_peak(threads=threads),
           "bf16": matmul_peak(threads=threads, dtype=torch.bfloat16)}
    return {k: max(v, (before or {}).get(k, 0.0)) for k, v in now.items()}


def side_precision(side: str, ours: str = "fp32") -> str:
    """The precision of a benchmark side's matrix products: ``*-bf16`` and ``*-fp32`` say it,
    TRL's default is fp32, prefstudio's sides run the stage's default ``ours`` (fp32, bf16,
    or auto: bf16 where this machine makes it fast)."""
    if side.endswith("-bf16"):
        return "bf16"
    if side.endswith("-fp32") or side.startswith("trl"):
        return "fp32"
    from harness.precision import resolve
    return resolve(ours, torch.device("cpu"))


def mfu_lines(flops_per_sample: float, peaks: dict[str, float], summary: dict,
              ours: str = "fp32") -> list[str]:
    """One line per side of a ``sides.summarize`` summary: its MFU at its median throughput
    per wall second and, when measured, per second of its own CPU time (what it would reach
    on a machine of its own: the fraction of the time it did run), against the matmul peak of
    the side's precision (``side_precision``)."""
    lines = [f"model FLOPs per sample {flops_per_sample / 1e9:.2f} GFLOP; matmul peak "
             + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
             + f" with {torch.get_num_threads()} thread(s), the sides' (best of this run's repeats)"]
    for side, s in summary["sides"].items():
        kind = side_precision(side, ours)
        peak = peaks[kind]
        wall = flops_per_sample * s["samples_per_s"]["median"]
        line = (f"MFU {side} ({kind}): {100 * wall / peak:.1f} % of wall time "
                f"({wall / 1e9:.1f} GFLOP/s)")
        if "samples_per_cpu_s" in s:
            cpu = flops_per_sample * s["samples_per_cpu_s"]["median"]
            line += f", {100 * cpu / peak:.1f} % of its CPU time"
        if kind != "fp32":
            line += f"; {100 * wall / peaks['fp32']:.1f} % of the fp32 peak"
        lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", type=int, default=2048, help="n of the n×n matrices")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    import os
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_peak(args.matrix, args.repeats, args.threads, dtype)
        print(f"{name} matmul peak: {peak / 1e9:.1f} GFLOP/s ({args.matrix}x{args.matrix}, best of "
              f"{args.repeats}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
