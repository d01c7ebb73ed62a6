"""Batched generation vs a one-prompt-at-a-time loop: generated tokens per second.

Both sides load the same model once and answer the same prompts with the same sampling
settings and max_new_tokens in one process:

  * peer: the plain transformers loop, ``model.generate`` on one chat-templated prompt at a time;
  * prefstudio: ``policy.generate.generate`` (length-sorted batches, left padding, KV cache).

Tokens are counted up to and including each response's end-of-sequence token (nothing after
it), so the batch's padding and the tokens it computes past a finished row count for nothing.

``--sweep 1,2,4,8,16,32 --rounds 3`` is the table of throughput against batch size: every side
(the loop, then prefstudio at each batch size) runs in a fresh process of its own (model
loaded, one warm-up call, then the timed call), interleaved: loop, 1, 2, ..., 32, loop, 1, ...
for --rounds rounds. It prints each side's tokens/s (median [min-max]) and its speed-up over
the loop of the same round (median [min-max] of the paired ratios), with the load average.

``--served 1,4,16`` adds a third side: the same model behind a local OpenAI-compatible server
started here (``bench/openai_server.py``: a minimal /v1/chat/completions that batches the
requests waiting for it, as vLLM and TGI do), and prefstudio's served generation
(``policy.served``: ``--model openai:URL#MODEL``) answering the prompts through it with that
many requests in flight. ``--no-peer`` skips the one-at-a-time loop.

    flock /work/heavy.lock python bench/generate.py --n 32 --batch-size 16 --max-new-tokens 128
    flock /work/heavy.lock python bench/generate.py --n 16 --max-new-tokens 64 --served 1,4,16 --no-peer
    python bench/generate.py --n 32 --max-new-tokens 32 --sweep 1,2,4,8,16,32 --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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


def served(model, tok, name: str, prompts: list[list[dict]], params: SamplingParams,
           concurrency: int) -> tuple[int, float, float]:
    """prefstudio's served generation through a local server: (tokens, seconds, mean batch)."""
    from bench.openai_server import LocalOpenAIServer
    from policy.served import ServedModel, ServerSettings, Wanted, generate_served

    server = LocalOpenAIServer(model, tok, name, max_batch=16).start()
    client = ServedModel(f"openai:{server.url}#{name}", ServerSettings(concurrency=concurrency))
    tokens = []
    try:
        start = time.perf_counter()
        generate_served(client, [Wanted(m, 0, 1) for m in prompts], [params.temperature],
                        top_p=params.top_p, max_new_tokens=params.max_new_tokens,
                        seed=params.seed, on_prompt=lambda i, c, done: tokens.append(c[0]["tokens"]))
        seconds = time.perf_counter() - start
    finally:
        client.close()
        server.stop()
    return sum(tokens), seconds, sum(server.batches) / max(len(server.batches), 1)


def one_side(args, prompts, params, side: str) -> dict:
    """--side: one timed side in this (fresh) process: 'loop' or a batch size."""
    model, tok = load_policy(args.model, dtype=getattr(torch, args.dtype))
    warm = SamplingParams(max_new_tokens=4, temperature=0)
    if side == "loop":
        one_at_a_time(model, tok, prompts[:1], warm)
        tokens, seconds = one_at_a_time(model, tok, prompts, params)
    else:
        batched(model, tok, prompts[:int(side)], warm, int(side))
        tokens, seconds = batched(model, tok, prompts, params, int(side))
    return {"side": side, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def sweep(args) -> None:
    """Every side in its own process, interleaved over --rounds rounds; the table."""
    from bench.sides import load_line, show, spread
    sides = ["loop", *args.sweep.split(",")]
    print(load_line(), flush=True)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    passed = [a for a in sys.argv[1:] if a not in ("--sweep", args.sweep, "--rounds", str(args.rounds))]
    for r in range(args.rounds):
        for side in sides:
            out = subprocess.run([sys.executable, __file__, *passed, "--side", side],
                                 capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            x = runs[side][-1]
            print(f"round {r} {side:>5}: {x['tokens']} tokens in {x['seconds']:.1f} s = "
                  f"{x['tokens_per_s']:.1f} tokens/s (load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"\n| side | tokens/s, median [min-max] over {args.rounds} rounds | speed-up over the loop "
          f"(paired by round), median [min-max] |\n|---|---|---|")
    for side in sides:
        rates = [x["tokens_per_s"] for x in runs[side]]
        ups = [a / b["tokens_per_s"] for a, b in zip(rates, runs["loop"])]
        s = spread(ups)
        mid, lo, hi = s['median'], s['min'], s['max']
        label = "one prompt at a time (transformers loop)" if side == "loop" else f"prefstudio, batch {side}"
        print(f"| {label} | {show(rates)} | {mid:.2f}x [{lo:.2f}-{hi:.2f}] |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


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
    ap.add_argument("--served", help="comma list of concurrencies for the served side, e.g. 1,4,16")
    ap.add_argument("--no-peer", action="store_true", help="skip the one-at-a-time loop")
    ap.add_argument("--sweep", help="comma list of batch sizes: the interleaved table (above)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --sweep")
    ap.add_argument("--side", help=argparse.SUPPRESS)   # one side of --sweep, in its own process
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's). On a loaded "
                    "machine use 1: two threads that wait for each other at every op ran the "
                    "loop at 1 token/s where one thread ran it at 14 (2026-12-06)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep:
        return sweep(args)

    prompts = read_prompts(args.prompts)[:args.n]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, seed=args.seed)
    if args.side:
        print(json.dumps(one_side(args, prompts, params, args.side)))
        return
    model, tok = load_policy(args.model, dtype=getattr(torch, args.dtype))
    warm = SamplingParams(max_new_tokens=4, temperature=0)
    one_at_a_time(model, tok, prompts[:1], warm)
    batched(model, tok, prompts[:2], warm, 2)

    rows = []   # (label, tokens, seconds, note)
    if not args.no_peer:
        rows.append(("one prompt at a time", *one_at_a_time(model, tok, prompts, params), ""))
    rows.append((f"prefstudio batch {args.batch_size}",
                 *batched(model, tok, prompts, params, args.batch_size), "in-process"))
    for c in [int(x) for x in args.served.split(",")] if args.served else []:
        tokens, seconds, mean_batch = served(model, tok, args.model, prompts, params, c)
        rows.append((f"served, concurrency {c}", tokens, seconds,
                     f"mean server batch {mean_batch:.1f}"))
    print(f"model {args.model} ({args.dtype}), {len(prompts)} prompts, max_new_tokens "
          f"{args.max_new_tokens}, temperature {args.temperature}, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':28}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}  ")
    for label, tokens, seconds, note in rows:
        print(f"{label:28}{tokens:>8}{seconds:>10.1f}{tokens / seconds:>10.1f}  {note}")
    if not args.no_peer:
        print(f"speed-up (tokens/s): {(rows[1][1] / rows[1][2]) / (rows[0][1] / rows[0][2]):.2f}x")
    print(json.dumps({"bench": "generate", "model": args.model, "dtype": args.dtype,
                      "prompts": len(prompts), "batch_size": args.batch_size,
                      "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                      "load_average": round(os.getloadavg()[0], 1),
                      "rows": [{"side": label, "tokens": t, "seconds": round(s, 2),
                                "tokens_per_s": round(t / s, 1)} for label, t, s, _ in rows]}))


if __name__ == "__main__":
    main()
