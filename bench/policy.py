"""Policy-optimisation benchmarks: prefstudio vs its peers, side by side in one run.

    python bench/policy.py dpo [--pairs 32] [--batch 4] [--steps 16] [--rounds 3] [--sides trl,prefstudio]

Each side runs in a fresh subprocess (so its peak RSS is its own) on the same model, data,
batch size and number of optimizer steps, the sides interleaved for ``--rounds`` rounds
(``bench/sides.py``); the parent prints each side's median and spread, one ratio line per
peer (``ratio prefstudio/TRL: throughput median …``), for DPO the model FLOPs utilisation
(``bench/mfu.py``), then one JSON line with everything. Parts: ``dpo`` (vs TRL's DPOTrainer), ``ppo``
(vs TRL's experimental PPOTrainer), ``rloo`` (vs prefstudio's own PPO) and ``sft`` (vs TRL's
SFTTrainer, on the DPO pairs' chosen replies):

    flock /work/heavy.lock python bench/policy.py ppo --prompts 32 --batch 8 --steps 4 \
        --max-prompt-len 48 --max-response-len 24
    flock /work/heavy.lock python bench/policy.py rloo --prompts 32 --batch 8 --steps 4 \
        --max-prompt-len 48 --max-response-len 24

``--batch`` is samples per step for every part (RLOO: batch / 4 prompts × k = 4).

Timing is end to end for each side: load the model, tokenize, (prefstudio: compute and cache
the reference log-probs), train, save the adapter. Other people's jobs on the machine affect
the absolute numbers; run it under the heavy lock and compare ratios.
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
from annotate.trainingdata import PairExample  # noqa: E402  (after the sys.path line)

# ../shared/data beside the checkout (or beside the folder of worktrees)
HH = next((p for p in (ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl",
                       ROOT.parent.parent / "shared" / "data" / "hh-harmless-1500.jsonl")
           if p.exists()), ROOT.parent / "shared" / "data" / "hh-harmless-1500.jsonl")


# --- DPO ------------------------------------------------------------------------------------

def dpo_pairs(args) -> list:
    """The first ``--pairs`` HH pairs whose prompt and both replies fit the length limits, so
    neither side truncates anything and both see exactly the same tokens."""
    from annotate.trainingdata import from_file
    from policy.dpo import response_text
    from harness.chat import render_chat
    from policy.lm import load_tokenizer

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


def dpo_prefstudio(args, pairs, out: Path, precision: str = "auto") -> dict:
    from policy.dpo import DPOConfig, train_dpo
    from harness.lora import LoraSettings

    config = DPOConfig(model=args.model, lr=args.lr, beta=0.1, batch_size=args.batch,
                       max_steps=args.steps, save_every=0, log_every=1, seed=0,
                       max_prompt_len=args.max_prompt_len, max_response_len=args.max_response_len,
                       lora=LoraSettings(r=16, alpha=32), precision=precision)
    train_dpo(config, pairs, out)
    return prefstudio_losses(out)


def dpo_trl(args, pairs, out: Path, gradient_checkpointing: bool = False,
            bf16: bool = False) -> dict:
    """TRL's DPOTrainer; ``bf16``: its mixed precision (the Trainer's autocast), the
    counterpart of prefstudio's default on a CPU with bf16 instructions."""
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]
    config = DPOConfig(**trl_arguments(args, out, bf16), beta=0.1, loss_type=["sigmoid"],
                       gradient_checkpointing=gradient_checkpointing)
    return trl_train(DPOTrainer, config, rows, args, out)


def trl_arguments(args, out: Path, bf16: bool) -> dict:
    """The training arguments every TRL side shares (the sizes and schedule of prefstudio's)."""
    return dict(output_dir=str(out), per_device_train_batch_size=args.batch,
                max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                warmup_steps=0, max_length=None, bf16=bf16, use_cpu=True, report_to="none",
                save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0,
                disable_tqdm=True)


def trl_train(trainer_class, config, rows: list[dict], args, out: Path) -> dict:
    """Train ``trainer_class`` (a TRL trainer) on ``rows`` with the same LoRA as prefstudio's
    sides, save the adapter; the first and last logged loss."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.hub import resolve

    folder = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = trainer_class(model=model, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tok,
                            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                   target_modules="all-linear",
                                                   task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"first": losses[0], "last": losses[-1]}


def prefstudio_losses(out: Path) -> dict:
    """The first and last logged loss of a prefstudio run folder."""
    from annotate.runlog import read_metrics
    losses = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
    return {"first": losses[0], "last": losses[-1]}


# --- SFT ------------------------------------------------------------------------------------
# The same HH pairs as DPO; each side learns the chosen reply after its prompt (TRL: a
# conversational prompt-completion dataset, so its loss is on the completion only; prefstudio:
# the same chat, its assistant turns labelled — the earlier ones of a multi-turn prompt too, so
# prefstudio's LM head sees a few more positions than the completion alone).

def sft_prefstudio(args, pairs, out: Path, precision: str | None = None,
                   gradient_checkpointing: bool = False) -> dict:
    from policy.sft import SFTConfig, chats_from_pairs, train_sft
    from harness.lora import LoraSettings

    config = SFTConfig(model=args.model, lr=args.lr, batch_size=args.batch, max_steps=args.steps,
                       save_every=0, log_every=1, seed=0, lora=LoraSettings(r=16, alpha=32),
                       gradient_checkpointing=gradient_checkpointing,
                       **({"precision": precision} if precision else {}))
    train_sft(config, chats_from_pairs(pairs), out)
    return prefstudio_losses(out)


def sft_trl(args, pairs, out: Path, bf16: bool = False) -> dict:
    """TRL's SFTTrainer on the prompt-completion form of the pairs (loss on the completion),
    with its defaults: gradient checkpointing on, a chunked NLL (prefstudio's counterpart:
    side ``prefstudio+gc``)."""
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": p.prompt, "completion": [{"role": "assistant", "content": p.chosen}]}
            for p in pairs]
    return trl_train(SFTTrainer, SFTConfig(**trl_arguments(args, out, bf16)), rows, args, out)


# --- PPO and RLOO ---------------------------------------------------------------------------
# The reward model of every side is SmolLM2's base with a scalar head on its last token (the
# head drawn once from a seeded generator; no reward training, so "reward" only shows that the
# loop runs, not that it learns anything useful): TRL holds it as a fourth model
# (AutoModelForSequenceClassification); prefstudio loads the same run folder through
# ``load_reward(rm=...)``, which reads it off the policy's own base (``SharedBaseReward``).

def rl_prompts(args) -> list:
    """The first ``--prompts`` HH prompts (the chat before the first reply) that fit the limit."""
    from annotate.trainingdata import from_file
    from harness.chat import render_chat
    from policy.lm import load_tokenizer

    tok = load_tokenizer(args.model)
    prompts, seen = [], set()
    for pair in from_file(args.data).pairs:
        key = json.dumps(pair.prompt)
        if key in seen or len(tok(render_chat(tok, pair.prompt), add_special_tokens=False)[
                "input_ids"]) > args.max_prompt_len:
            continue
        seen.add(key)
        prompts.append(pair.prompt)
        if len(prompts) == args.prompts:
            return prompts
    raise SystemExit(f"only {len(prompts)} prompts of {args.data} fit --max-prompt-len")


def reward_head(hidden_size: int):
    import torch
    g = torch.Generator().manual_seed(1234)
    return torch.randn(1, hidden_size, generator=g) * hidden_size ** -0.5    # [1, H]


def make_reward_model(model: str, folder: Path) -> Path:
    """A reward-model run folder on the base ``model``: no adapter, the seeded head (head.pt),
    marked ``shared_backbone`` so prefstudio loads it onto the policy's own base."""
    import torch
    from policy.lm import load_policy
    from rewardmodel.model import RewardModel

    base, tok = load_policy(model)
    rm = RewardModel.on_backbone(base, tok, spec=model)
    with torch.no_grad():
        rm.head.weight.copy_(reward_head(base.config.hidden_size))
    rm.save(folder)
    return folder


def _rl_result(out: Path) -> dict:
    from annotate.runlog import read_metrics
    rewards = [m["value"] for m in read_metrics(out) if m["name"] == "reward"]
    kl = [m["value"] for m in read_metrics(out) if m["name"] == "kl"]
    return {"first": rewards[0], "last": rewards[-1], "last_kl": kl[-1]}


def ppo_prefstudio(args, prompts, out: Path, critic: str = "shared") -> dict:
    from harness.lora import LoraSettings
    from policy.ppo import PPOConfig, train_ppo
    from policy.rewards import load_reward

    cfg = PPOConfig(model=args.model, lr=args.lr, batch_size=args.batch,
                    minibatch_size=args.batch // 2, ppo_epochs=4, max_steps=args.steps,
                    save_every=0, seed=0, beta=0.05, critic=critic,
                    lora=LoraSettings(r=16, alpha=32), forward_batch_size=args.batch)
    cfg.sampling.max_new_tokens = args.max_response_len
    cfg.sampling.max_prompt_tokens = args.max_prompt_len
    cfg.shaping.normalize = False          # TRL uses the raw score
    reward_fn, _ = load_reward(rm=args.rm_dir)      # a SharedBaseReward: bound to the policy
    train_ppo(cfg, prompts, reward_fn, out)
    return _rl_result(out)


def rloo_prefstudio(args, prompts, out: Path) -> dict:
    from harness.lora import LoraSettings
    from policy.rewards import load_reward
    from policy.rloo import RLOOConfig, train_rloo

    k = 4
    cfg = RLOOConfig(model=args.model, lr=args.lr, batch_size=args.batch // k, k=k,
                     max_steps=args.steps, save_every=0, seed=0, beta=0.05,
                     lora=LoraSettings(r=16, alpha=32))
    cfg.sampling.max_new_tokens = args.max_response_len
    cfg.sampling.max_prompt_tokens = args.max_prompt_len
    cfg.shaping.normalize = False
    reward_fn, _ = load_reward(rm=args.rm_dir)
    train_rloo(cfg, prompts, reward_fn, out)
    return _rl_result(out)


def ppo_trl(args, prompts, out: Path, lora: bool = False) -> dict:
    """TRL's experimental PPOTrainer: policy, reference, reward and value as separate models
    (with ``lora``: the policy is a LoRA adapter and the reference its disabled adapter)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoTokenizer)
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from harness.chat import render_chat
    from harness.hub import resolve

    folder = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    # SmolLM2's pad token is its EOS; TRL masks every pad-id token, which would hide the
    # prompt's end-of-turn tokens from its models. Give it a pad token of its own.
    tok.pad_token = "<|endoftext|>"
    load_lm = lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    load_cls = lambda: AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, dtype=torch.float32)
    policy = load_lm()
    ref = None if lora else load_lm()
    value, reward = load_cls(), load_cls()
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    with torch.no_grad():
        reward.score.weight.copy_(reward_head(reward.config.hidden_size))
    ids = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
    data = Dataset.from_list([{"input_ids": i} for i in ids])
    config = PPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch,
                       gradient_accumulation_steps=1, num_mini_batches=2, num_ppo_epochs=4,
                       total_episodes=args.steps * args.batch, response_length=args.max_response_len,
                       local_rollout_forward_batch_size=args.batch, stop_token="eos",
                       temperature=1.0, missing_eos_penalty=1.0, kl_coef=0.05,
                       learning_rate=args.lr, lr_scheduler_type="constant",
                       num_sample_generations=0, report_to="none", save_strategy="no",
                       use_cpu=True, bf16=False, logging_steps=1, seed=0, disable_tqdm=True)
    trainer = PPOTrainer(
        args=config, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
        value_model=value, train_dataset=data, eval_dataset=data.select(range(2)),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                               task_type="CAUSAL_LM") if lora else None)
    trainer.train()
    scores = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    kl = [h["objective/kl"] for h in trainer.state.log_history if "objective/kl" in h]
    return {"first": scores[0], "last": scores[-1], "last_kl": kl[-1]}


# --- the harness ----------------------------------------------------------------------------

SIDES = {
    "dpo": {
        "prefstudio": dpo_prefstudio,
        "trl": dpo_trl,
        "trl+gc": lambda args, pairs, out: dpo_trl(args, pairs, out, gradient_checkpointing=True),
        "trl-bf16": lambda args, pairs, out: dpo_trl(args, pairs, out, bf16=True),
        "prefstudio-fp32": lambda args, pairs, out: dpo_prefstudio(args, pairs, out, "fp32"),
        "prefstudio-bf16": lambda args, pairs, out: dpo_prefstudio(args, pairs, out, "bf16"),
    },
    "sft": {
        "prefstudio": sft_prefstudio,
        "trl": sft_trl,
        "trl-bf16": lambda args, pairs, out: sft_trl(args, pairs, out, bf16=True),
        "prefstudio-fp32": lambda args, pairs, out: sft_prefstudio(args, pairs, out, "fp32"),
        "prefstudio-bf16": lambda args, pairs, out: sft_prefstudio(args, pairs, out, "bf16"),
        "prefstudio+gc": lambda args, pairs, out: sft_prefstudio(args, pairs, out,
                                                                 gradient_checkpointing=True),
    },
    "ppo": {
        "prefstudio": ppo_prefstudio,
        "prefstudio+critic-adapter": lambda a, p, o: ppo_prefstudio(a, p, o, critic="adapter"),
        "trl": ppo_trl,
        "trl+lora": lambda a, p, o: ppo_trl(a, p, o, lora=True),
    },
    "rloo": {"rloo": rloo_prefstudio, "ppo": ppo_prefstudio},
}
# The parent selects the data once (reading HH goes through a DuckDB import, which would
# otherwise count in each side's peak RSS) and hands the children a plain JSON file.
DATA = {"dpo": lambda args: [vars(p) for p in dpo_pairs(args)], "ppo": rl_prompts,
        "rloo": rl_prompts}
DATA["sft"] = DATA["dpo"]
LOAD = {"dpo": lambda rows: [PairExample(**r) for r in rows], "ppo": list, "rloo": list}
LOAD["sft"] = LOAD["dpo"]


# prefstudio with one of its speed-ups switched off, to measure what each one gains
ABLATIONS = {"prefstudio-unfused-lora": {"PREFSTUDIO_FUSED_LORA": "0"},   # harness/fused_lora.py
             "prefstudio-no-trim": {"PREFSTUDIO_HEAP_TRIM": "0"}}              # harness/heap.py
for _part in ("dpo", "sft", "ppo"):
    SIDES[_part].update({name: SIDES[_part]["prefstudio"] for name in (*ABLATIONS, "baseline")})
OURS = {"dpo": "prefstudio", "sft": "prefstudio", "ppo": "prefstudio", "rloo": "rloo"}


def child(part: str, side: str, args) -> None:
    """One side in this process: prints one RESULT line with its time and peak RSS."""
    sides.use_code_root()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = LOAD[part](json.loads(Path(args.data_file).read_text()))
    with tempfile.TemporaryDirectory(prefix=f"bench-{part}-{side}-") as tmp:
        start, cpu0 = time.perf_counter(), time.process_time()
        extra = SIDES[part][side](args, data, Path(tmp) / "run")
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu0
    samples = args.steps * args.batch
    sides.emit({"part": part, "side": side, "seconds": seconds, "samples": samples,
                "samples_per_s": samples / seconds, "samples_per_cpu_s": samples / cpu_seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra})


def dpo_lengths(args, pairs: list[dict]) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) tokens of each pair, for the model-FLOP count."""
    from harness.chat import render_chat
    from policy.dpo import response_text
    from policy.lm import load_tokenizer

    tok = load_tokenizer(args.model)
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
    return [(n(render_chat(tok, p["prompt"])), n(response_text(tok, p["prompt"], p["chosen"])),
             n(response_text(tok, p["prompt"], p["rejected"]))) for p in pairs]


def parent(part: str, args, argv: list[str]) -> None:
    load = sides.load_average()
    rows = DATA[part](args)
    data_file = Path(tempfile.mkdtemp(prefix="bench-data-")) / f"{part}.json"
    data_file.write_text(json.dumps(rows, default=list))
    names = (args.sides or ",".join(s for s in SIDES[part]
                                    if s not in ABLATIONS and s != "baseline")).split(",")
    for side in names:
        if side not in SIDES[part]:
            raise SystemExit(f"unknown side {side!r} for {part}; known: {', '.join(SIDES[part])}")
    ours = OURS[part] if OURS[part] in names else next(   # else the first of prefstudio's sides
        (n for n in names if n.startswith(("prefstudio", "rloo"))), names[0])
    envs = {**ABLATIONS, "baseline": {sides.CODE_ROOT: args.baseline}}
    commands = {side: ["env", *(f"{k}={v}" for k, v in envs.get(side, {}).items()),
                       sys.executable, __file__, part, "--child", side, "--data-file",
                       str(data_file), *argv] for side in names}
    from mfu import matmul_peaks
    peak_before = matmul_peaks(threads=args.threads) if part == "dpo" else None
    results = sides.run_rounds(commands, args.rounds, cwd=str(ROOT))
    data = f"{args.pairs} pairs" if part in ("dpo", "sft") else f"{args.prompts} prompts"
    metric = "loss" if part in ("dpo", "sft") else "reward"
    print(f"{part}: {data}, batch {args.batch}, {args.steps} steps, model {args.model}; "
          "time end to end (load, tokenize, " + ("reference, " if part == "dpo" else "")
          + "train, save)")
    notes = None
    if part == "dpo":
        from mfu import dpo_flops_per_pair, mfu_lines, model_shape
        shape = model_shape(args.model, 16, "all-linear", causal_lm=True)
        flops = dpo_flops_per_pair(shape, dpo_lengths(args, rows))
        peak = matmul_peaks(threads=args.threads, before=peak_before)
        notes = lambda summary: mfu_lines(flops, peak, summary, ours="auto")
    summary = sides.report(results, ours, labels={"trl": "TRL", "trl-bf16": "TRL bf16"},
                           load_at_start=load, notes=notes,
                           extra=lambda r: f"{metric} {r['first']:.3f} -> {r['last']:.3f}")
    print("JSON " + json.dumps({"part": part, "load_at_start": load,
                                "config": {k: v for k, v in vars(args).items()
                                           if k not in ("child", "data_file")},
                                "results": results, "summary": summary}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=sorted(SIDES))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--sides", help="comma-separated, in the order each round runs them (default: "
                   "every side of the part but the ablations prefstudio-unfused-lora, ...)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (bench/sides.py)")
    p.add_argument("--threads", type=int, help="torch threads on every side (default: torch's)")
    p.add_argument("--baseline", help="a checkout (e.g. a worktree of an older commit) whose "
                   "prefstudio runs as the side 'baseline'")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=str(HH))
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--prompts", type=int, default=32, help="ppo/rloo: prompts")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-prompt-len", type=int, default=128)
    p.add_argument("--max-response-len", type=int, default=96)
    p.add_argument("--rm-dir", help=argparse.SUPPRESS)   # ppo/rloo: made by the parent
    args = p.parse_args()
    if args.child:
        return child(args.part, args.child, args)
    argv = [a for a in sys.argv[2:]]
    if args.part in ("ppo", "rloo") and not args.rm_dir:
        with tempfile.TemporaryDirectory(prefix="bench-rm-") as tmp:
            args.rm_dir = str(make_reward_model(args.model, Path(tmp) / "rm"))
            return parent(args.part, args, argv + ["--rm-dir", args.rm_dir])
    parent(args.part, args, argv)


if __name__ == "__main__":
    main()
