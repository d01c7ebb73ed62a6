"""Reward-model training speed: prefstudio vs TRL's RewardTrainer, side by side in one run.

    python bench/rm.py --backbone minilm --steps 40 --batch-size 8 [--rounds 3]
        [--lora-targets all-linear|peft-default]

Both sides train the same backbone with the same LoRA settings (r, alpha, no dropout, the same
target modules: every linear layer as in the default recipe, or peft's default for the
architecture; the head trained in full), the same pairs, batch size, learning-rate schedule
and number of optimizer steps, on the CPU: prefstudio in its default precision (``auto``: bf16
matrix products on a CPU with AMX, else fp32; side ``prefstudio-fp32`` forces fp32), TRL in
fp32 (its default; side ``trl-bf16``: its ``bf16=True`` autocast). Each side runs in a fresh process (so peak
RSS is its own) and reports samples (pairs) per second of the training loop, peak RSS and the
final logged loss; the sides run interleaved for ``--rounds`` rounds (``bench/sides.py``) and
the parent prints medians, spreads and the ratios.

Same pairs: TRL 1.12 silently drops every pair whose chosen or rejected sequence exceeds
``max_length`` (prefstudio truncates the prompt from the left instead), so the benchmark keeps
only the pairs that fit for both, and neither side truncates or drops anything.
TRL needs an EOS token to append: BERT-style tokenizers have none, so the encoder run gives
it [SEP]. The encoder's text layout differs slightly (TRL: ``[CLS] prompt response [SEP] [SEP]``,
prefstudio: ``[CLS] prompt [SEP] response [SEP]``; the same number of tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))   # last: bench/annotate.py must not hide the annotate package
import sides  # noqa: E402  (bench/sides.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ../shared/data beside the checkout (or beside the folder of worktrees)
DATA = next((p for p in (ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl",
                         ROOT.parent.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
             if p.exists()), ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl")


# prefstudio with one of its speed-ups switched off, to measure what each one gains
ABLATIONS = {
    "prefstudio-plain": {"PREFSTUDIO_FUSED_LORA": "0", "PREFSTUDIO_FULL_LAST_LAYER": "1"},
    "prefstudio-unfused-lora": {"PREFSTUDIO_FUSED_LORA": "0"},       # harness/fused_lora.py
    "prefstudio-full-last-layer": {"PREFSTUDIO_FULL_LAST_LAYER": "1"},  # rewardmodel/last_layer.py
    "prefstudio-no-trim": {"PREFSTUDIO_HEAP_TRIM": "0"},              # harness/heap.py
    "prefstudio-no-heap": {"PREFSTUDIO_HEAP_TRIM": "0", "PREFSTUDIO_HEAP_MMAP": "0"},  # glibc's defaults
}


def load_pairs(path: Path):
    from annotate.trainingdata import from_file
    return from_file(path)


def fitting_pairs(data, spec: str, max_length: int, limit: int
                  ) -> tuple[list[int], str, int, list[tuple[int, int]], list[int]]:
    """Indices of the pairs that neither side would truncate or drop (file order), the
    backbone kind, how many pairs were too long, the (chosen, rejected) token counts of the
    pairs kept (for the model-FLOP count) and TRL's longer sequence of each (its "length"). Runs in the parent, so the tokenizer pass does
    not count in either side's peak memory."""
    from harness.chat import render_plain
    from rewardmodel.model import RewardModel

    rm = RewardModel.from_spec(spec, max_length=10**6, lora=None)
    tok = rm.tokenizer
    ours = rm.encode([p.prompt for p in data.pairs for _ in (0, 1)],
                     [r for p in data.pairs for r in (p.chosen, p.rejected)])
    if rm.kind == "encoder":
        trl_texts = [render_plain(p.prompt) + "\n" + r + tok.sep_token
                     for p in data.pairs for r in (p.chosen, p.rejected)]
        theirs = [len(ids) for ids in tok(trl_texts)["input_ids"]]
    else:
        theirs = [len(e.ids) for e in ours]  # the same chat template on both sides
    keep = [i for i in range(len(data.pairs))
            if max(len(ours[2 * i].ids), len(ours[2 * i + 1].ids), theirs[2 * i], theirs[2 * i + 1])
            <= max_length]
    keep = keep[:limit]
    lengths = [(len(ours[2 * i].ids), len(ours[2 * i + 1].ids)) for i in keep]
    return keep, rm.kind, len(data.pairs) - len(keep), lengths, [max(theirs[2 * i], theirs[2 * i + 1])
                                                                 for i in keep]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_targets(args) -> str | None:
    """The same LoRA targets on both sides: None lets peft choose (attention q, v)."""
    return None if args.lora_targets == "peft-default" else args.lora_targets


def run_prefstudio(args, data, kind, precision: str = "auto") -> dict:
    from rewardmodel.train import RMConfig, train

    with tempfile.TemporaryDirectory() as out:
        config = RMConfig(out=out, base=args.backbone, max_length=args.max_length,
                          lora_r=args.lora_r, lora_alpha=2 * args.lora_r, batch_size=args.batch_size,
                          lora_targets=lora_targets(args),
                          max_steps=args.steps, lr=args.lr, scheduler="cosine",
                          warmup_ratio=args.warmup / args.steps, eval_fraction=0,
                          eval_every=10**9, save_every=0, log_every=10, use_margin=False, seed=0,
                          precision=precision)
        summary = train(config, data)
    result = {"samples_per_s": summary["samples_per_s"], "seconds": summary["seconds"],
              "final_loss": summary["final_loss"]}
    if "cpu_seconds" in summary:   # (a --baseline checkout may be older than that figure)
        samples = summary["samples_per_s"] * summary["seconds"]
        result["samples_per_cpu_s"] = samples / summary["cpu_seconds"]
    return result


def run_trl(args, data, kind, lengths: list[int] | None = None, bf16: bool = False) -> dict:
    """TRL's RewardTrainer; with ``lengths`` (each pair's longer sequence) its Trainer's own
    length grouping (``train_sampling_strategy="group_by_length"``, the counterpart of
    prefstudio's length-bucketed batches); ``bf16``: its mixed precision (``bf16=True``, the
    Trainer's autocast), the counterpart of prefstudio's default on a CPU with AMX."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    from harness.hub import resolve
    from harness.chat import render_plain

    if kind == "decoder":  # conversational: TRL applies the chat template, as prefstudio does
        rows = [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                 "rejected": [{"role": "assistant", "content": p.rejected}]} for p in data.pairs]
    else:
        rows = [{"prompt": render_plain(p.prompt) + "\n", "chosen": p.chosen, "rejected": p.rejected}
                for p in data.pairs]
    if lengths:
        rows = [dict(row, length=n) for row, n in zip(rows, lengths)]
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(output_dir=out, per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps, learning_rate=args.lr,
                              lr_scheduler_type="cosine", warmup_steps=args.warmup,
                              logging_steps=10, save_strategy="no", eval_strategy="no",
                              report_to="none", use_cpu=True, seed=0, max_length=args.max_length,
                              bf16=bf16,
                              disable_dropout=True, max_grad_norm=1.0, dataloader_num_workers=0,
                              eos_token="[SEP]" if kind == "encoder" else None,
                              **({"train_sampling_strategy": "group_by_length",
                                  "remove_unused_columns": False} if lengths else {}))
        lora = LoraConfig(task_type="SEQ_CLS", r=args.lora_r, lora_alpha=2 * args.lora_r,
                          lora_dropout=0.0, target_modules=lora_targets(args))
        trainer = RewardTrainer(model=resolve(args.backbone), args=config,
                                train_dataset=Dataset.from_list(rows), peft_config=lora)
        kept = len(trainer.train_dataset)
        t0, cpu0 = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"samples_per_s": args.steps * args.batch_size / seconds, "seconds": seconds,
            "samples_per_cpu_s": args.steps * args.batch_size / cpu_seconds,
            "final_loss": losses[-1] if losses else None, "trl_kept_pairs": kept}


def child(args) -> None:
    sides.use_code_root()
    import torch
    from annotate.trainingdata import TrainingData
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = json.loads(Path(args.plan).read_text())
    data = load_pairs(Path(args.data))
    data = TrainingData(pairs=[data.pairs[i] for i in plan["keep"]], data_hash=data.data_hash)
    torch.manual_seed(0)
    if args.side == "trl+group-by-length":
        result = run_trl(args, data, plan["kind"], plan["trl_lengths"])
    elif args.side.startswith("trl"):
        result = run_trl(args, data, plan["kind"], bf16=args.side == "trl-bf16")
    else:
        precision = {"prefstudio-fp32": "fp32", "prefstudio-bf16": "bf16"}.get(args.side, "auto")
        result = run_prefstudio(args, data, plan["kind"], precision=precision)
    result.update(side=args.side, pairs=len(data.pairs), peak_rss_mb=peak_rss_mb(),
                  threads=torch.get_num_threads())
    sides.emit(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-targets", default="all-linear",
                    help="all-linear (the default recipe's) or peft-default (peft's choice for "
                         "the architecture: attention query and value), on both sides")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=1200, help="use at most this many pairs")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, help="torch threads on both sides (default: torch's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (bench/sides.py)")
    ap.add_argument("--sides", default="trl,prefstudio",
                    help="sides, in the order each round runs them: trl, trl-bf16 (its mixed "
                         "precision), trl+group-by-length, prefstudio, prefstudio-fp32 / "
                         "prefstudio-bf16 (precision forced), and "
                         f"prefstudio with a speed-up switched off ({', '.join(ABLATIONS)})")
    ap.add_argument("--baseline", help="a checkout (e.g. a worktree of an older commit) whose "
                    "prefstudio runs as the side 'baseline'")
    ap.add_argument("--side", choices=["prefstudio", "prefstudio-fp32", "prefstudio-bf16", "trl",
                                       "trl-bf16", "trl+group-by-length", "baseline", *ABLATIONS],
                    help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)

    load = sides.load_average()
    keep, kind, dropped, lengths, trl_lengths = fitting_pairs(load_pairs(Path(args.data)), args.backbone,
                                        args.max_length, args.pairs)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as plan:
        plan.write(json.dumps({"keep": keep, "kind": kind, "trl_lengths": trl_lengths}))
        plan.flush()
        envs = {**ABLATIONS, "baseline": {sides.CODE_ROOT: args.baseline}}
        commands = {side: ["env", *(f"{k}={v}" for k, v in envs.get(side, {}).items()),
                           sys.executable, __file__, "--side", side, "--plan", plan.name,
                           *sys.argv[1:]] for side in args.sides.split(",")}
        from mfu import matmul_peaks
        peak_before = matmul_peaks(threads=args.threads)
        results = sides.run_rounds(commands, args.rounds)
    ours = results["prefstudio"][0]
    print(f"backbone {args.backbone}, {ours['pairs']} pairs (dropped {dropped} "
          f"longer than {args.max_length} tokens), batch {args.batch_size}, {args.steps} steps, "
          f"LoRA r={args.lora_r} on {args.lora_targets}, {ours['threads']} threads")
    from mfu import mfu_lines, model_shape, rm_flops_per_pair
    shape = model_shape(args.backbone, args.lora_r, lora_targets(args), causal_lm=kind == "decoder")
    flops = rm_flops_per_pair(shape, lengths, causal=kind == "decoder")
    peak = matmul_peaks(threads=args.threads, before=peak_before)
    summary = sides.report(results, "prefstudio",
                           labels={"trl": "TRL", "trl-bf16": "TRL bf16",
                                   "trl+group-by-length": "TRL group_by_length"}, load_at_start=load,
                           extra=lambda r: f"final loss {r['final_loss']:.4f}",
                           notes=lambda summary: mfu_lines(flops, peak, summary, ours="auto"))
    print("JSON " + json.dumps({"args": vars(args), "dropped_too_long": dropped,
                              "load_at_start": load, "results": results, "summary": summary}))


if __name__ == "__main__":
    main()
