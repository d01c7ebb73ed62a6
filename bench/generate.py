"""Batched generation vs a one-prompt-at-a-time loop: generated tokens per second.

Both sides load the same model once and answer the same prompts with the same sampling
settings and max_new_tokens in one process:

  * peer: the plain transformers loop, ``model.generate`` on one chat-templated prompt at a time;
  * prefstudio: ``policy.generate.generate`` (length-sorted batches, left padding, KV cache).

Tokens are counted up to and including each response's end-of-sequence token (nothing after
it), so the batch's padding and the tokens it computes past a finished row count for nothing.

    flock /work/heavy.lock python bench/generate.py --n 32 --batch-size 16 --max-new-tokens 128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from annotate.formats import read_prompts  # noqa: E402
from policy.generate import SamplingParams, _eos_ids, generate  # noqa: E402
from harness.chat import render_chat  # noqa: E402
from policy.lm import load_policy  # noqa: E402


def one_at_a_time(model, tok, prompts: list[list[dict]], params: SamplingParams) -> tuple[int, float]:
    """The peer: the textbook loop. Returns (generated tokens, seconds)."""
    eos = _eos_ids(model, tok)
    greedy = params.temperature <= 0
    torch.manual_seed(params.seed or 0)
    tokens, start = 0, time.perf_counter()
    for messages in prompts:
        enc = tok(render_chat(tok, messages), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=not greedy,
                                 temperature=None if greedy else params.temperature,
                                 top_p=None if greedy else params.top_p, top_k=None,
                                 eos_token_id=eos, pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        tokens += next((i + 1 for i, t in enumerate(new) if t in eos), len(new))
    return tokens, time.perf_counter() - start


def batched(model, tok, prompts: list[list[dict]], params: SamplingParams,
            batch_size: int) -> tuple[int, float]:
    start = time.perf_counter()
    result = generate(model, tok, prompts, params, k=1, batch_size=batch_size, progress=False)
    return sum(row[0]["tokens"] for row in result), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", default=str(ROOT / "data" / "sample" / "prompts.jsonl"))
    ap.add_argument("--n", type=int, default=32, help="prompts to answer (the file's first N)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    prompts = read_prompts(args.prompts)[:args.n]
    model, tok = load_policy(args.model, dtype=getattr(torch, args.dtype))
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, seed=args.seed)
    warm = SamplingParams(max_new_tokens=4, temperature=0)
    one_at_a_time(model, tok, prompts[:1], warm)
    batched(model, tok, prompts[:2], warm, 2)

    peer_tokens, peer_s = one_at_a_time(model, tok, prompts, params)
    ours_tokens, ours_s = batched(model, tok, prompts, params, args.batch_size)
    peer_rate, ours_rate = peer_tokens / peer_s, ours_tokens / ours_s
    print(f"model {args.model} ({args.dtype}), {len(prompts)} prompts, max_new_tokens "
          f"{args.max_new_tokens}, temperature {args.temperature}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'':28}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    print(f"{'one prompt at a time':28}{peer_tokens:>8}{peer_s:>10.1f}{peer_rate:>10.1f}")
    print(f"{f'prefstudio batch {args.batch_size}':28}{ours_tokens:>8}{ours_s:>10.1f}{ours_rate:>10.1f}")
    print(f"speed-up (tokens/s): {ours_rate / peer_rate:.2f}x")
    print(json.dumps({"bench": "generate", "model": args.model, "dtype": args.dtype,
                      "prompts": len(prompts), "batch_size": args.batch_size,
                      "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                      "peer_tokens": peer_tokens, "peer_s": round(peer_s, 2),
                      "ours_tokens": ours_tokens, "ours_s": round(ours_s, 2),
                      "ratio": round(ours_rate / peer_rate, 2)}))


if __name__ == "__main__":
    main()
