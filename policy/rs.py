"""Rejection sampling fine-tuning (Llama 2 §3.2.3), RAFT (Dong et al. 2023) and ReST
(Gulcehre et al. 2023, "Reinforced Self-Training (ReST) for Language Modeling").

Each round:
  1. sample K responses per prompt from the current policy;
  2. score them with the reward callable (a reward model, an ensemble, or a programmatic rule);
  3. keep the best response of each prompt (Llama 2: best-of-K), or the top fraction of all
     samples (RAFT), never anything below ``min_reward``;
  4. fine-tune the policy on the kept (prompt, response) chats, loss on the response only;
and the next round samples from the improved policy.

ReST (``thresholds``): a round is a Grow step (1-2) followed by one Improve step (3-4) per
threshold, ReST's Algorithm 1: Improve step i keeps every sample of the Grow set whose reward
is at least the ``thresholds[i]`` quantile of the Grow set's rewards (rising thresholds, so
each Improve step fine-tunes the policy the previous one left on a smaller, better subset).

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
from .sft import build_examples, collate, sft_steps
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
    thresholds: list[float] | None = None  # ReST: one Improve step per quantile (rising, in
                                           # (0, 1)) instead of select / top_fraction

    @property
    def improve_steps(self) -> int:
        return len(self.thresholds) if self.thresholds else 1

    @property
    def steps_per_improve(self) -> int:
        """max_steps split evenly over every Improve step of every round (RS: one a round)."""
        return max(1, math.ceil(self.max_steps / (self.rounds * self.improve_steps)))


def check_thresholds(thresholds: Sequence[float]) -> None:
    """ReST's thresholds: quantiles in (0, 1), each above the one before (ValueError)."""
    if not thresholds:
        raise ValueError("thresholds: give one or more quantiles, e.g. 0.5,0.7,0.9")
    for q in thresholds:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
            raise ValueError(f"thresholds: {q!r} is not a quantile in (0, 1)")
    for low, high in zip(thresholds, thresholds[1:]):
        if not low < high:
            raise ValueError(f"thresholds must rise (ReST raises the bar at each Improve step): "
                             f"{high} follows {low}")


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


def quantile_sets(rewards: torch.Tensor, quantiles: Sequence[float],
                  min_reward: float | None = None) -> tuple[list[float], list[list[bool]]]:
    """ReST's Improve filters: per quantile q, the reward threshold (the q-quantile of all
    rewards, linear interpolation as numpy's default) and which samples reach it."""
    values = rewards.double()
    cuts = torch.quantile(values, torch.tensor(list(quantiles), dtype=torch.float64)).tolist()
    floor = -math.inf if min_reward is None else min_reward
    return cuts, [[v >= cut and v >= floor for v in values.tolist()] for cut in cuts]


def select(config: RSConfig, prompt_index: Sequence[int], rewards: torch.Tensor) -> list[list[bool]]:
    """Which samples each Improve step keeps: one list for RS and RAFT, one per ReST threshold."""
    if config.thresholds:
        return quantile_sets(rewards, config.thresholds, config.min_reward)[1]
    if config.select == "best":
        return [best_per_prompt(prompt_index, rewards, config.min_reward)]
    return [top_fraction(rewards, config.top_fraction, config.min_reward)]


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
        before = scores.get(rid, {})
        kept = s["kept"] or before.get("kept", False)
        scores[rid] = {"response_id": rid, "scorer": scorer, "value": s["reward"],
                       "run_id": run_id, "kept": kept}
        if "kept_by" in s:   # ReST: the Improve steps that trained on it
            scores[rid]["improve_steps"] = sorted(set(s["kept_by"]) |
                                                  set(before.get("improve_steps", [])))
    return list(responses.values()), list(scores.values())


# --- training ---------------------------------------------------------------------------------

def train_rs(config: RSConfig, prompts: Sequence[Sequence[dict]], reward_fn: RewardFn,
             out_dir: str | Path, *, scorer: str = "reward", parents: Sequence[str] = ()) -> Path:
    """Rounds of sample K → score → keep the best → fine-tune on them (ReST: Grow, then one
    Improve step per threshold)."""
    if config.select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, not {config.select!r}")
    if config.k < 1 or config.rounds < 1:
        raise ValueError("k and rounds must be at least 1")
    if not 0 < config.top_fraction <= 1:
        raise ValueError("top_fraction must be in (0, 1]")
    if config.thresholds is not None:
        check_thresholds(config.thresholds)
        if config.select != "best":
            raise ValueError("thresholds replace select: ReST keeps every sample above each "
                             "Improve step's quantile")
    if not prompts:
        raise ValueError("no prompts")

    model, tok = load_for_training(config)
    with PolicyRun(config, out_dir, "rs", model, tok, parents=parents) as run:
        for rnd in range(run.state.get("round", 0), config.rounds):
            kept_sets = run.state.get("kept_sets") if run.state.get("round") == rnd else None
            if kept_sets is None:
                kept_sets = _grow(config, run, tok, prompts, reward_fn, scorer, rnd)
                run.state.update(round=rnd, kept_sets=kept_sets, improve=0)
            # 4. fine-tune on each Improve step's kept samples, loss on the response only
            for step in range(run.state.get("improve", 0), len(kept_sets)):
                phase = rnd * config.improve_steps + step
                end = min(config.max_steps, (phase + 1) * config.steps_per_improve)
                chats = kept_sets[step]
                if chats and run.step < end:
                    examples = build_examples(tok, chats, config.max_len, last_turn_only=True)
                    key = f"round-{rnd}" if not config.thresholds else f"round-{rnd}-improve-{step}"
                    batches = run.batches(examples, partial(collate, pad_id=tok.pad_token_id), key=key)
                    sft_steps(run, batches, end)
                elif not chats:
                    run.log.log(f"round {rnd}, improve step {step}: nothing kept "
                                "(min_reward too high?); no fine-tuning")
                run.state["improve"] = step + 1
            run.state = {"round": rnd + 1}
            run.save_checkpoint()
        # the policy after the last round, measured the same way as the rounds' samples
        final = measure_policy(run.unwrapped, tok, prompts, reward_fn,
                               SamplingParams(**{**config.sampling.as_dict(), "seed": config.seed}),
                               batch_size=config.sample_batch_size)
        run.metric(step=run.step, force=True, **{f"final_{k}": v for k, v in final.items()})
        return run.finish(**{f"final_{k}": v for k, v in final.items()})


def _grow(config: RSConfig, run: PolicyRun, tok, prompts: Sequence[Sequence[dict]],
          reward_fn: RewardFn, scorer: str, rnd: int) -> list[list[list[dict]]]:
    """Steps 1-3 of a round (ReST's Grow and its Improve filters): sample, score, select,
    record every sample with its keep decisions. Returns each Improve step's kept chats."""
    from accelerate.utils import gather_object
    acc, policy = run.accelerator, run.unwrapped
    mine = list(range(acc.process_index, len(prompts), acc.num_processes))
    # 1-2. sample K per prompt (this process's share) and score every sample
    params = SamplingParams(**{**config.sampling.as_dict(), "seed": config.seed * 1000 + rnd})
    local = sample_responses(policy, tok, [prompts[i] for i in mine], params,
                             k=config.k, batch_size=config.sample_batch_size)
    for s in local:
        s["prompt_index"] = mine[s["prompt_index"]]
    rewards = score_in_batches(reward_fn, [prompts[s["prompt_index"]] for s in local],
                               [s["text"] for s in local])
    for s, r in zip(local, rewards.tolist()):
        s["reward"] = r
    samples = sorted(gather_object(local), key=lambda s: s["prompt_index"])
    # 3. select over all processes' samples, so every process keeps the same sets
    rewards = torch.tensor([s["reward"] for s in samples])
    keeps = select(config, [s["prompt_index"] for s in samples], rewards)
    for j, s in enumerate(samples):
        kept_by = [i for i, keep in enumerate(keeps) if keep[j] and s["text"].strip()]
        s["kept"] = bool(kept_by)
        if config.thresholds:
            s["kept_by"] = kept_by
    kept = [s for s in samples if s["kept"]]
    responses, scores = sample_records(samples, prompts, scorer, run.log.id, policy.base_spec,
                                       {**params.as_dict(), "round": rnd, "k": config.k})
    run.log.record("responses", responses)
    run.log.record("scores", scores)
    per_step = {}
    if config.thresholds:   # ReST: each Improve step's reward threshold and how many reach it
        cuts = quantile_sets(rewards, config.thresholds, config.min_reward)[0]
        for i, cut in enumerate(cuts):
            per_step.update({f"threshold_{i}": cut,
                             f"kept_{i}": sum(i in s["kept_by"] for s in samples)})
    run.metric(round=rnd, reward=rewards.mean().item(),
               reward_kept=(sum(s["reward"] for s in kept) / len(kept)) if kept else None,
               kept=len(kept), kl=sum(s["kl"] for s in samples) / len(samples),
               length=sum(s["tokens"] for s in samples) / len(samples), force=True, **per_step)
    run.log.log(f"round {rnd}: kept {len(kept)} of {len(samples)} samples, mean reward "
                f"{rewards.mean().item():.4g}" + (f"; per Improve step {per_step}" if per_step else ""))
    return [[list(prompts[s["prompt_index"]]) + [{"role": "assistant", "content": s["text"]}]
             for s, keep in zip(samples, step_keep) if keep and s["text"].strip()]
            for step_keep in keeps]
