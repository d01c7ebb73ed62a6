"""RRHF: rank K responses by the policy's own length-normalised log-probabilities (Yuan et al.
2023, "RRHF: Rank Responses to Align Language Models with Human Feedback without tears").

One model in memory while training: the policy (a LoRA adapter on its base). There is no
reference model and no value model; the loss (``losses.rrhf_loss``) is a hinge between every
two candidates whose order it gets wrong, plus the cross-entropy of the best candidate.

Where the candidates and their order come from:

- labelled tasks (the store or any import file): each task's responses, scored by the labels.
  A task labelled by several annotators is aggregated the way the store aggregates pairs
  (majority direction per pair, ``store.pairs``); each candidate's score is its wins minus
  its losses over those pairs (Copeland), which for a single ranking is exactly its order,
  with tie groups tied.
- the same tasks re-scored by a reward model (``--rm``) or a programmatic reward: the reward
  orders them instead of the labels.
- prompts (``--prompts``): K samples per prompt from the starting policy, scored by the reward
  (one of the paper's sampling policies: the initial model's own samples, ranked by a reward
  model). Sampled once, before the first step, and kept in the checkpoint, so a resumed run
  trains on the same candidates.

A task's K candidates go through the model in one row behind one copy of their prompt
(``harness.packing``): each candidate sees the prompt and itself only.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from annotate import store
from harness.chat import render_chat
from harness.packing import pack_shared_prompts

from .dpo import response_text
from .generate import SamplingParams
from .lm import logprobs_from_logits
from .losses import preference_pairs, rrhf_loss
from .measure import sample_responses
from .rewards import RewardFn, bind_reward, score_in_batches
from .rs import sample_records
from .train_utils import PolicyRun, PolicySettings, load_for_training


@dataclass
class RRHFConfig(PolicySettings):
    lr: float = 5e-5
    sft_weight: float = 1.0           # λ of L = L_rank + λ·L_ft (the paper: 1)
    max_prompt_len: int = 512         # prompt tokens kept (the oldest are cut)
    max_response_len: int = 512       # tokens kept of each candidate (the end is cut)
    k: int = 4                        # samples per prompt, when candidates are sampled
    sample_batch_size: int = 16       # sequences per generate() call
    # generate's defaults (0.8, top-p 0.95), so a run trained on labels exports the usual sampling
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=128))

    def check(self) -> None:
        super().check()
        if self.max_prompt_len < 1 or self.max_response_len < 1:
            raise ValueError("max_prompt_len and max_response_len must be at least 1 token")
        if self.k < 2:
            raise ValueError("k must be at least 2: RRHF ranks several candidates per prompt")
        if self.sft_weight < 0:
            raise ValueError("sft_weight must be 0 or more")


@dataclass
class Candidates:
    """One prompt's candidates and their scores (higher is better; equal scores are a tie)."""
    prompt: list[dict]
    responses: list[str]
    scores: list[float]
    label_ids: tuple[str, ...] = ()


# --- where the order comes from ---------------------------------------------------------------

def candidates_from_pairs(pairs: Sequence) -> list[Candidates]:
    """Each task's candidates, scored wins − losses over its aggregated pairs (Copeland).

    ``pairs`` are ``trainingdata.PairExample`` (majority direction per pair over the current
    labels; an evenly split pair is absent, so it counts as a tie)."""
    tasks: dict[str, Candidates] = {}
    score: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in pairs:
        task = p.task_id or json.dumps(p.prompt)
        c = tasks.setdefault(task, Candidates(prompt=list(p.prompt), responses=[], scores=[]))
        for text in (p.chosen, p.rejected):
            if text not in c.responses:
                c.responses.append(text)
        score[task][p.chosen] += 1
        score[task][p.rejected] -= 1
        c.label_ids = tuple(sorted(set(c.label_ids) | set(p.label_ids)))
    for task, c in tasks.items():
        c.scores = [float(score[task][text]) for text in c.responses]
    return list(tasks.values())


def rescore(candidates: Sequence[Candidates], reward_fn: RewardFn) -> list[Candidates]:
    """The same candidates, scored by ``reward_fn`` instead of their labels."""
    prompts = [c.prompt for c in candidates for _ in c.responses]
    texts = [t for c in candidates for t in c.responses]
    rewards = score_in_batches(reward_fn, prompts, texts).tolist()
    out, at = [], 0
    for c in candidates:
        n = len(c.responses)
        out.append(Candidates(c.prompt, list(c.responses), rewards[at:at + n], c.label_ids))
        at += n
    return out


def sample_candidates(run: PolicyRun, prompts: Sequence[Sequence[dict]], reward_fn: RewardFn,
                      config: RRHFConfig, scorer: str) -> list[Candidates]:
    """K samples per prompt from the starting policy (each process its share), scored; the
    samples and scores go to the run folder (``responses.jsonl``, ``scores.jsonl``; kept = the
    best of its prompt, the one the SFT term trains on)."""
    from accelerate.utils import gather_object

    acc, policy = run.accelerator, run.unwrapped
    mine = list(range(acc.process_index, len(prompts), acc.num_processes))
    params = SamplingParams(**{**config.sampling.as_dict(), "seed": config.seed})
    local = sample_responses(policy, run.tok, [prompts[i] for i in mine], params, k=config.k,
                             batch_size=config.sample_batch_size, with_kl=False)
    for s in local:
        s["prompt_index"] = mine[s["prompt_index"]]
    rewards = score_in_batches(reward_fn, [prompts[s["prompt_index"]] for s in local],
                               [s["text"] for s in local]).tolist()
    for s, r in zip(local, rewards):
        s["reward"] = r
    samples = sorted(gather_object(local), key=lambda s: s["prompt_index"])
    by_prompt: dict[int, Candidates] = {}
    for s in samples:
        c = by_prompt.setdefault(s["prompt_index"], Candidates(list(prompts[s["prompt_index"]]), [], []))
        if s["text"].strip() and s["text"] not in c.responses:   # a repeat adds no pair
            c.responses.append(s["text"])
            c.scores.append(s["reward"])
    best = {i: c.responses[max(range(len(c.responses)), key=c.scores.__getitem__)]
            for i, c in by_prompt.items() if c.responses}
    for s in samples:
        s["kept"] = best.get(s["prompt_index"]) == s["text"]
    responses, scores = sample_records(samples, prompts, scorer, run.log.id, policy.base_spec,
                                       {**params.as_dict(), "k": config.k})
    run.log.record("responses", responses)
    run.log.record("scores", scores)
    run.metric(step=0, force=True, reward=sum(rewards) / max(len(rewards), 1))
    return list(by_prompt.values())


def record_scores(run: PolicyRun, candidates: Sequence[Candidates], scorer: str) -> None:
    """scores.jsonl rows for re-scored candidates of the store's tasks (kept = the best)."""
    rows = []
    for c in candidates:
        pid = store.prompt_id(store.check_messages(list(c.prompt)))
        best = max(range(len(c.responses)), key=c.scores.__getitem__)
        rows += [{"response_id": store.response_id(pid, text), "scorer": scorer, "value": value,
                  "run_id": run.log.id, "kept": i == best}
                 for i, (text, value) in enumerate(zip(c.responses, c.scores))]
    run.log.record("scores", rows)


def candidates_hash(items: Sequence) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


# --- batches ----------------------------------------------------------------------------------

def tokenize_candidates(tok, c: Candidates, config: RRHFConfig) -> dict:
    prompt = tok(render_chat(tok, list(c.prompt)), add_special_tokens=False)["input_ids"]
    encode = lambda text: tok(response_text(tok, c.prompt, text),
                              add_special_tokens=False)["input_ids"][:config.max_response_len]
    return {"prompt": prompt[-config.max_prompt_len:],
            "responses": [encode(text) for text in c.responses], "scores": list(c.scores)}


def collate_candidates(examples: list[dict], pad_id: int) -> dict:
    """One row per prompt: [left pad | prompt (P) | candidate 1 | ... | candidate K], candidate
    k padded to the longest k-th candidate of the batch, so it sits at the same columns in
    every row. ``present`` is False where a prompt has fewer than K candidates."""
    packed, _ = pack_shared_prompts([(e["prompt"], e["responses"]) for e in examples],
                                    pad_id, aligned=True)
    K = max(len(e["responses"]) for e in examples)
    scores = torch.zeros(len(examples), K)                                           # [B, K]
    present = torch.zeros(len(examples), K, dtype=torch.bool)                        # [B, K]
    for b, e in enumerate(examples):
        scores[b, :len(e["scores"])] = torch.tensor(e["scores"], dtype=torch.float32)
        present[b, :len(e["scores"])] = True
    widths = [max(len(e["responses"][k]) for e in examples if k < len(e["responses"]))
              for k in range(K)]
    return {**packed,                     # input_ids, position_ids, segments [B, T]; mask [B, 1, T, T]
            "prompt_len": max(len(e["prompt"]) for e in examples), "widths": widths,
            "scores": scores, "present": present}


def candidate_logps(model, batch: dict) -> torch.Tensor:
    """p_i: each candidate's mean token log-prob under ``model`` (eq. 1), [B, K].

    Only the columns that predict a candidate token reach the LM head: candidate k's first
    token is predicted from the last prompt token, the rest from the token before them."""
    ids, P = batch["input_ids"], batch["prompt_len"]
    source, target, start = [], [], P
    for width in batch["widths"]:
        source += [P - 1, *range(start, start + width - 1)]
        target += range(start, start + width)
        start += width
    source_t = torch.tensor(source, device=ids.device)
    target_t = torch.tensor(target, device=ids.device)
    dtype = next(model.parameters()).dtype
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(dtype),
                   position_ids=batch["position_ids"], use_cache=False,
                   logits_to_keep=source_t).logits                                   # [B, N, V]
    logp = logprobs_from_logits(logits, ids[:, target_t])                            # [B, N]
    K = len(batch["widths"])
    which = batch["segments"][:, target_t, None] == torch.arange(1, K + 1, device=ids.device)
    which = which.to(logp.dtype)                                                     # [B, N, K]
    return torch.einsum("bn,bnk->bk", logp, which) / which.sum(1).clamp(min=1)       # [B, K]


def ordered_pairs(logps: torch.Tensor, scores: torch.Tensor, present: torch.Tensor) -> tuple[int, int]:
    """(pairs the policy orders like the scores, p_i < p_j where r_i < r_j; all such pairs)."""
    prefer = preference_pairs(scores, present)                                       # [B, K, K]
    right = prefer & (logps[:, :, None] < logps[:, None, :])
    return int(right.sum()), int(prefer.sum())


# --- training ---------------------------------------------------------------------------------

def train_rrhf(config: RRHFConfig, candidates: Sequence[Candidates] | None, out_dir: str | Path,
               *, prompts: Sequence[Sequence[dict]] | None = None, reward_fn: RewardFn | None = None,
               scorer: str = "reward", parents: Sequence[str] = (), data_hash: str | None = None,
               label_ids: Sequence[str] = ()) -> Path:
    """RRHF on ``candidates`` (ordered by their scores, or by ``reward_fn`` when given), or on
    K samples per prompt of ``prompts`` scored by ``reward_fn``."""
    config.check()
    if prompts is not None and candidates is not None:
        raise ValueError("give candidates (labelled tasks) or prompts to sample, not both")
    if prompts is not None and reward_fn is None:
        raise ValueError("sampled candidates need a reward to order them (--rm or --reward)")
    if candidates is not None:
        candidates = [c for c in candidates if len(c.responses) >= 2]
        if not candidates:
            raise ValueError("no task with two or more ranked candidates")
    elif not prompts:
        raise ValueError("no prompts")
    model, tok = load_for_training(config)
    if data_hash is None:
        data_hash = candidates_hash(prompts if prompts is not None
                                    else [[c.prompt, c.responses, c.scores] for c in candidates])
    with PolicyRun(config, out_dir, "rrhf", model, tok, parents=parents, data_hash=data_hash,
                   label_ids=label_ids) as run:
        if "candidates" in run.state:
            candidates = [Candidates(**c) for c in run.state["candidates"]]
        elif reward_fn is not None:   # scored before the first step, kept for a resume
            bind_reward(reward_fn, run.unwrapped, tok)
            if prompts is not None:
                candidates = sample_candidates(run, prompts, reward_fn, config, scorer)
            else:
                candidates = rescore(candidates, reward_fn)
                run.on_main(lambda: record_scores(run, candidates, scorer))
            candidates = [c for c in candidates if len(c.responses) >= 2]
            if not candidates:
                raise ValueError("no prompt has two different non-empty samples to rank")
            run.state["candidates"] = [asdict(c) for c in candidates]
            run.save_checkpoint()
        run.log.log(f"{len(candidates)} prompts, "
                    f"{sum(len(c.responses) for c in candidates)} candidates")
        examples = [tokenize_candidates(tok, c, config) for c in candidates]
        batches = run.batches(examples, partial(collate_candidates, pad_id=tok.pad_token_id))
        stats: dict[str, float] = {}
        while not run.done:
            sums, right, total = {"loss": 0.0, "rank_loss": 0.0, "sft_loss": 0.0}, 0, 0
            for batch in run.accumulate(batches):
                logps = candidate_logps(run.model, batch)                            # [B, K]
                loss, rank, ft = rrhf_loss(logps, batch["scores"], batch["present"],
                                           config.sft_weight)                        # [B] each
                run.backward(loss.mean())
                for name, value in (("loss", loss), ("rank_loss", rank), ("sft_loss", ft)):
                    sums[name] += value.mean().item() / config.grad_accum
                r, n = ordered_pairs(logps.detach(), batch["scores"], batch["present"])
                right, total = right + r, total + n
            grad_norm = run.optimizer_step()
            stats = run.metric(**sums, pairs_ordered=right / total if total else None,
                               grad_norm=grad_norm)
            run.maybe_checkpoint()
        return run.finish(prompts=len(candidates),
                          candidates=sum(len(c.responses) for c in candidates),
                          **{f"final_{k}": v for k, v in stats.items()})
