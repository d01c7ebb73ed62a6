"""Does SFT learn the same in bf16 as in fp32? The same chats, seed and steps in each
precision, then the held-out NLL of each adapter (and of the base) scored in fp32.

    python bench/sft_precision.py [--train 128] [--held 32] [--steps 32] [--threads 1]

The chats are HH pairs' prompts followed by their chosen replies (``../shared/data``): the
first ``--train`` for training, ``--held`` from the 1,001st on for scoring. Prints one line per
precision (seconds, first and last-8-step training loss, held-out NLL) and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HH = ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl"


def held_out_nll(spec: str, chats: list) -> float:
    """Mean NLL per labelled token of ``chats`` under the policy ``spec``, in fp32."""
    import torch
    from policy.lm import load_policy
    from policy.sft import build_examples, collate, sft_loss

    model, tok = load_policy(spec)
    examples = build_examples(tok, chats, 1024)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            loss, n = sft_loss(model, collate(examples[i:i + 8], tok.pad_token_id))
            total, tokens = total + loss.item() * n, tokens + n
    return total / tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--train", type=int, default=128, help="training chats")
    ap.add_argument("--held", type=int, default=32, help="held-out chats")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()

    import torch
    from annotate.runlog import read_metrics
    from annotate.trainingdata import from_file
    from policy.sft import SFTConfig, chats_from_pairs, train_sft

    if args.threads:
        torch.set_num_threads(args.threads)
    chats = chats_from_pairs(from_file(args.data).pairs)
    train, held = chats[:args.train], chats[1000:1000 + args.held]
    result = {"base": held_out_nll("smollm2-135m-instruct", held)}
    print(f"base: held-out NLL {result['base']:.4f}", flush=True)
    for precision in ("fp32", "bf16"):
        out = Path(tempfile.mkdtemp(prefix=f"sft-{precision}-")) / "run"
        start = time.perf_counter()
        train_sft(SFTConfig(precision=precision, max_steps=args.steps, batch_size=4, seed=0,
                            save_every=0), train, out)
        seconds = time.perf_counter() - start
        losses = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
        result[precision] = {"seconds": seconds, "first_loss": losses[0],
                             "last8_loss": sum(losses[-8:]) / len(losses[-8:]),
                             "held_nll": held_out_nll(str(out), held)}
        shutil.rmtree(out.parent)
        r = result[precision]
        print(f"{precision}: {seconds:.0f} s, loss {r['first_loss']:.4f} -> {r['last8_loss']:.4f} "
              f"(last 8 steps), held-out NLL {r['held_nll']:.4f}", flush=True)
    print("JSON " + json.dumps({"args": vars(args), **result}))


if __name__ == "__main__":
    main()
