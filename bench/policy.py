"""Policy-optimisation benchmarks: prefstudio vs its peers, side by side in one run.

    flock /work/heavy.lock python bench/policy.py dpo [--pairs 32] [--batch 4] [--steps 16]

Each side runs in its own subprocess (so its peak RSS is its own) on the same model, data,
batch size and number of optimizer steps; the parent prints a table and the ratios against
prefstudio, then one JSON line with everything. Parts: ``dpo`` (vs TRL's DPOTrainer); the
PPO and RLOO parts live beside it (same harness: add a SIDES entry).

Timing is end to end for each side: load the model, tokenize, (prefstudio: compute and cache
the reference log-probs), train, save the adapter. Other people's jobs on the machine affect
the absolute numbers; run it under the heavy lock and compare ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ../shared/data beside the checkout (or beside the worktrees folder, for a git worktree)
from annotate.trainingdata import PairExample  # noqa: E402  (after the sys.path line)

HH = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.exists()),
          ROOT.parent / "shared") / "data" / "hh-harmless-1500.jsonl"


# --- DPO ------------------------------------------------------------------------------------

def dpo_pairs(args) -> list:
    """The first ``--pairs`` HH pairs whose prompt and both replies fit the length limits, so
    neither side truncates anything and both see exactly the same tokens."""
    from annotate.trainingdata import from_file
    from policy.dpo import response_text
    from policy.lm import load_tokenizer, render_chat

    tok = load_tokenizer(args.model)
    n_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    chosen = []
    for pair in from_file(args.data).pairs:
        if (n_tokens(render_chat(tok, pair.prompt)) <= args.max_prompt_len
                and n_tokens(response_text(tok, pair.prompt, pair.chosen)) <= args.max_response_len
                and n_tokens(response_text(tok, pair.prompt, pair.rejected)) <= args.max_response_len):
            chosen.append(pair)
        if len(chosen) == args.pairs:
            return chosen
    raise SystemExit(f"only {len(chosen)} pairs of {args.data} fit the length limits")


def dpo_prefstudio(args, pairs, out: Path) -> dict:
    from policy.dpo import DPOConfig, train_dpo
    from policy.lm import LoraSettings

    config = DPOConfig(model=args.model, lr=args.lr, beta=0.1, batch_size=args.batch,
                       max_steps=args.steps, save_every=0, log_every=1, seed=0,
                       max_prompt_len=args.max_prompt_len, max_response_len=args.max_response_len,
                       lora=LoraSettings(r=16, alpha=32))
    train_dpo(config, pairs, out)
    from annotate.runlog import read_metrics
    losses = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
    return {"first_loss": losses[0], "last_loss": losses[-1]}


def dpo_trl(args, pairs, out: Path, gradient_checkpointing: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rewardmodel.hub import resolve

    folder = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    data = Dataset.from_list([{"prompt": p.prompt,
                               "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]}
                              for p in pairs])
    config = DPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                       warmup_steps=0, beta=0.1, loss_type=["sigmoid"], max_length=None,
                       gradient_checkpointing=gradient_checkpointing, bf16=False, use_cpu=True,
                       report_to="none", save_strategy="no", logging_steps=1, seed=0,
                       dataloader_num_workers=0, disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"first_loss": losses[0], "last_loss": losses[-1]}


# --- the harness ----------------------------------------------------------------------------

SIDES = {
    "dpo": {
        "prefstudio": dpo_prefstudio,
        "trl": dpo_trl,
        "trl+gc": lambda args, pairs, out: dpo_trl(args, pairs, out, gradient_checkpointing=True),
    },
}
# The parent selects the data once (reading HH goes through a DuckDB import, which would
# otherwise count in each side's peak RSS) and hands the children a plain JSON file.
DATA = {"dpo": lambda args: [vars(p) for p in dpo_pairs(args)]}
LOAD = {"dpo": lambda rows: [PairExample(**r) for r in rows]}


def child(part: str, side: str, args) -> None:
    """One side in this process: prints one JSON line with its time and peak RSS."""
    import torch
    torch.manual_seed(0)
    data = LOAD[part](json.loads(Path(args.data_file).read_text()))
    with tempfile.TemporaryDirectory(prefix=f"bench-{part}-{side}-") as tmp:
        start = time.perf_counter()
        extra = SIDES[part][side](args, data, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    samples = args.steps * args.batch
    print(json.dumps({"part": part, "side": side, "seconds": seconds, "samples": samples,
                      "samples_per_s": samples / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **extra}))


def parent(part: str, args, argv: list[str]) -> None:
    results = []
    data_file = Path(tempfile.mkdtemp(prefix="bench-data-")) / f"{part}.json"
    data_file.write_text(json.dumps(DATA[part](args), default=list))
    for side in args.sides.split(","):
        if side not in SIDES[part]:
            raise SystemExit(f"unknown side {side!r} for {part}; known: {', '.join(SIDES[part])}")
        proc = subprocess.run([sys.executable, __file__, part, "--child", side,
                               "--data-file", str(data_file), *argv],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"{part}/{side} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ours = next((r for r in results if r["side"] == "prefstudio"), results[0])
    print(f"{part}: {args.pairs} pairs, batch {args.batch}, {args.steps} steps, model {args.model}")
    print(f"{'side':<12}{'seconds':>9}{'samples/s':>11}{'peak RSS MB':>13}"
          f"{'speed ×':>9}{'memory ×':>10}{'loss first→last':>20}")
    for r in results:
        print(f"{r['side']:<12}{r['seconds']:>9.1f}{r['samples_per_s']:>11.3f}"
              f"{r['peak_rss_mb']:>13.0f}{ours['samples_per_s'] / r['samples_per_s']:>9.2f}"
              f"{ours['peak_rss_mb'] / r['peak_rss_mb']:>10.2f}"
              f"{r['first_loss']:>11.3f} → {r['last_loss']:.3f}")
    print("(speed × = prefstudio samples/s ÷ this side's; memory × = prefstudio peak RSS ÷ this side's)")
    print(json.dumps({"part": part, "config": {k: v for k, v in vars(args).items()
                                               if k not in ("child", "data_file")},
                      "results": results}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=sorted(SIDES))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--sides", default="prefstudio,trl,trl+gc")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-prompt-len", type=int, default=128)
    p.add_argument("--max-response-len", type=int, default=96)
    args = p.parse_args()
    if args.child:
        return child(args.part, args.child, args)
    argv = [a for a in sys.argv[2:]]
    parent(args.part, args, argv)


if __name__ == "__main__":
    main()
