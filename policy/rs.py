"""Rejection sampling fine-tuning (Llama 2 §3.2.3) and RAFT (Dong et al. 2023).

Each round:
  1. sample K responses per prompt from the current policy;
  2. score them with the reward callable (a reward model, an ensemble, or a programmatic rule);
  3. keep the best response of each prompt (Llama 2: best-of-K), or the top fraction of all
     samples (RAFT), never anything below ``min_reward``;
  4. fine-tune the policy on the kept (prompt, response) chats, loss on the response only;
and the next round samples from the improved policy.

Every sample, its score and whether it was kept go into the run folder (``responses.jsonl``,
``scores.jsonl``) for the database owner to ingest, so the store knows which samples trained
which policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from annotate import store
from .generate import SamplingParams
from .measure import measure_policy, sample_responses
from .rewards import RewardFn, score_in_batches
from .sft import build_examples, collate, sft_loss
from .train_utils import PolicyRun, PolicySettings, load_for_training

SELECTIONS = ("best", "top")


@dataclass
class RSConfig(PolicySettings):
    lr: float = 1e-4
    k: int = 4                       # samples per prompt
    rounds: int = 2                  # sample → select → fine-tune, repeated; max_steps is the
                                     # total of optimizer steps, split evenly over the rounds
    select: str = "best"             # "best": best of K per prompt; "top": top fraction overall
    top_fraction: float = 0.25       # for select="top" (RAFT's ratio)
    min_reward: float | None = None  # never keep a sample scored below this
    max_len: int = 1024              # tokens per (prompt + response) chat for fine-tuning
    sample_batch_size: int = 16      # sequences per generate() call
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(
        max_new_tokens=128, temperature=1.0, top_p=1.0))

    @property
    def steps_per_round(self) -> int:
        return max(1, math.ceil(self.max_steps / self.rounds))

    @classmethod
    def from_dict(cls, values: dict) -> "RSConfig":
        values = dict(values)
        if isinstance(values.get("sampling"), dict):
            values["sampling"] = SamplingParams(**values["sampling"])
        return super().from_dict(values)


# --- selection (pure functions) -------------------------------------------------------------

def best_per_prompt(prompt_index: Sequence[int], rewards: torch.Tensor,
                    min_reward: float | None = None) -> list[bool]:
    """Keep the highest-reward sample of each prompt (the first one on ties)."""
    best: dict[int, int] = {}
    for j, i in enumerate(prompt_index):
        if i not in best or rewards[j] > rewards[best[i]]:
            best[i] = j
    chosen = set(best.values())
    return [j in chosen and (min_reward is None or rewards[j].item() >= min_reward)
            for j in range(len(prompt_index))]


def top_fraction(rewards: torch.Tensor, fraction: float,
                 min_reward: float | None = None) -> list[bool]:
    """Keep the ⌈fraction·N⌉ highest-reward samples over all prompts (RAFT)."""
    n_keep = max(1, math.ceil(fraction * len(rewards)))
    order = torch.argsort(rewards, descending=True, stable=True)[:n_keep].tolist()
    keep = set(order)
    return [j in keep and (min_reward is None or rewards[j].item() >= min_reward)
            for j in range(len(rewards))]


def select(config: RSConfig, prompt_index: Sequence[int], rewards: torch.Tensor) -> list[bool]:
    if config.select == "best":
        return best_per_prompt(prompt_index, rewards, config.min_reward)
    return top_fraction(rewards, config.top_fraction, config.min_reward)


# --- records for the store --------------------------------------------------------------------

def sample_records(samples: list[dict], prompts: Sequence[Sequence[dict]], scorer: str,
                   run_id: str, model_spec: str, gen_params: dict) -> tuple[list[dict], list[dict]]:
    """responses.jsonl and scores.jsonl rows (ids as the store derives them). A text sampled
    twice for a prompt is one response; it counts as kept if any copy was kept."""
    responses, scores = {}, {}
    for s in samples:
        if not s["text"].strip():
            continue                              # the store holds no empty responses
        messages = store.check_messages(list(prompts[s["prompt_index"]]))
        pid = store.prompt_id(messages)
        rid = store.response_id(pid, s["text"])
        responses[rid] = {"id": rid, "prompt_id": pid, "prompt": messages, "text": s["text"],
                          "model": model_spec, "adapter": None, "run_id": run_id,
                          "gen_params": gen_params}
        kept = s["kept"] or scores.get(rid, {}).get("kept", False)
        scores[rid] = {"response_id": rid, "scorer": scorer, "value": s["reward"],
                       "run_id": run_id, "kept": kept}
    return list(responses.values()), list(scores.values())


# --- training ---------------------------------------------------------------------------------

def train_rs(config: RSConfig, prompts: Sequence[Sequence[dict]], reward_fn: RewardFn,
             out_dir: str | Path, *, scorer: str = "reward", parents: Sequence[str] = ()) -> Path:
    """Rounds of sample K → score → keep the best → fine-tune on them."""
    if config.select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, not {config.select!r}")
    if config.k < 1 or config.rounds < 1:
        raise ValueError("k and rounds must be at least 1")
    if not 0 < config.top_fraction <= 1:
        raise ValueError("top_fraction must be in (0, 1]")
    if not prompts:
        raise ValueError("no prompts")
    from accelerate.utils import gather_object

    model, tok = load_for_training(config)
    with PolicyRun(config, out_dir, "rs", model, tok, parents=parents) as run:
        acc, policy = run.accelerator, run.unwrapped
        mine = list(range(acc.process_index, len(prompts), acc.num_processes))
        for rnd in range(run.state.get("round", 0), config.rounds):
            kept_chats = run.state.get("kept") if run.state.get("round") == rnd else None
            if kept_chats is None:
                # 1-2. sample K per prompt (this process's share) and score every sample
                params = SamplingParams(**{**config.sampling.as_dict(),
                                           "seed": config.seed * 1000 + rnd})
                local = sample_responses(policy, tok, [prompts[i] for i in mine], params,
                                         k=config.k, batch_size=config.sample_batch_size)
                for s in local:
                    s["prompt_index"] = mine[s["prompt_index"]]
                rewards = score_in_batches(reward_fn, [prompts[s["prompt_index"]] for s in local],
                                           [s["text"] for s in local])
                for s, r in zip(local, rewards.tolist()):
                    s["reward"] = r
                samples = sorted(gather_object(local), key=lambda s: s["prompt_index"])
                # 3. select over all processes' samples, so every process keeps the same set
                rewards = torch.tensor([s["reward"] for s in samples])
                keep = select(config, [s["prompt_index"] for s in samples], rewards)
                for s, k in zip(samples, keep):
                    s["kept"] = bool(k) and bool(s["text"].strip())
                kept = [s for s in samples if s["kept"]]
                responses, scores = sample_records(
                    samples, prompts, scorer, run.log.id, policy.base_spec,
                    {**params.as_dict(), "round": rnd, "k": config.k})
                run.log.record("responses", responses)
                run.log.record("scores", scores)
                run.metric(round=rnd, reward=rewards.mean().item(),
                           reward_kept=(sum(s["reward"] for s in kept) / len(kept)) if kept else None,
                           kept=len(kept), kl=sum(s["kl"] for s in samples) / len(samples),
                           length=sum(s["tokens"] for s in samples) / len(samples), force=True)
                run.log.log(f"round {rnd}: kept {len(kept)} of {len(samples)} samples, "
                            f"mean reward {rewards.mean().item():.4g}")
                kept_chats = [list(prompts[s["prompt_index"]])
                              + [{"role": "assistant", "content": s["text"]}] for s in kept]
                run.state.update(round=rnd, kept=kept_chats)
            # 4. fine-tune on the kept samples, loss on the response only
            end = min(config.max_steps, (rnd + 1) * config.steps_per_round)
            if kept_chats and run.step < end:
                examples = build_examples(tok, kept_chats, config.max_len, last_turn_only=True)
                batches = run.batches(examples, partial(collate, pad_id=tok.pad_token_id),
                                      key=f"round-{rnd}")
                while run.step < end:
                    total = 0.0
                    for batch in run.accumulate(batches):
                        loss, _ = sft_loss(run.model, batch)
                        run.backward(loss)
                        total += loss.item() / config.grad_accum
                    grad_norm = run.optimizer_step()
                    run.metric(loss=total, grad_norm=grad_norm)
                    run.maybe_checkpoint()
            elif not kept_chats:
                run.log.log(f"round {rnd}: nothing kept (min_reward too high?); no fine-tuning")
            run.state = {"round": rnd + 1}
            run.save_checkpoint()
        # the policy after the last round, measured the same way as the rounds' samples
        final = measure_policy(policy, tok, prompts, reward_fn,
                               SamplingParams(**{**config.sampling.as_dict(), "seed": config.seed}),
                               batch_size=config.sample_batch_size)
        run.metric(step=run.step, force=True, **{f"final_{k}": v for k, v in final.items()})
        return run.finish(**{f"final_{k}": v for k, v in final.items()})
