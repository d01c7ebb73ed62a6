"""Batched sampling: left padding, the KV cache, chat templates, seeds.

``sample`` is the one place prefstudio generates text: ``prefstudio generate``, rejection
sampling, PPO and RLOO rollouts and policy evaluation all call it. It returns the token
tensors the RL trainers need (prompt + response ids, masks) along with the decoded texts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from harness.chat import render_chat


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_prompt_tokens: int = 1024     # longer prompts are cut from the left (oldest turns)
    seed: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rollout:
    """A batch of prompts with one sampled response each.

    input_ids, attention_mask: [B, P + R]  prompt left-padded to P, response right-padded to R
    response_mask:             [B, P + R]  1 on response tokens up to and including EOS
    """
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    texts: list[str]
    finished: list[bool]              # False: hit max_new_tokens without EOS

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len:]


class FastTopP(LogitsProcessor):
    """Nucleus (top-p) filtering (Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration") as transformers' ``TopPLogitsWarper`` does it, without sorting the whole
    vocabulary at every step: a token is kept when the probability mass ranked above it is
    below ``top_p``. The ``k`` most likely tokens decide that whenever they hold ``top_p`` of
    the mass; a row where they do not (a very flat distribution) is filtered the full way.
    The same tokens are kept (up to ties in rounding); sorting 49,152 logits for a batch of 32
    took 307 ms a step on one core, the top 256 18 ms (BENCHMARKS.md, generation)."""

    def __init__(self, top_p: float, k: int = 256):
        self.top_p, self.k = float(top_p), k
        self.full = TopPLogitsWarper(top_p=top_p)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top, index = scores.softmax(-1).topk(min(self.k, scores.shape[-1]), dim=-1)
        above = top.cumsum(-1) - top                    # the mass ranked above each token
        keep = above < self.top_p
        keep[:, 0] = True
        out = torch.full_like(scores, -float("inf"))
        out.scatter_(1, index, scores.gather(1, index).masked_fill(~keep, -float("inf")))
        uncovered = top.sum(-1) < self.top_p            # the nucleus reaches past the top k
        if uncovered.any():
            rows = uncovered.nonzero().flatten()
            out[rows] = self.full(input_ids[rows], scores[rows])
        return out


def _eos_ids(model, tok) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


@torch.no_grad()
def sample(model, tok, prompts: list[list[dict]], params: SamplingParams) -> Rollout:
    """One response per prompt, sampled in one batch (greedy when temperature == 0)."""
    texts = [render_chat(tok, messages) for messages in prompts]
    tok.padding_side, tok.truncation_side = "left", "left"
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True,
              max_length=params.max_prompt_tokens, add_special_tokens=False)
    eos_ids = _eos_ids(model, tok)
    greedy = params.temperature <= 0
    was_training = model.training
    model.eval()
    nucleus = not greedy and params.top_p is not None and params.top_p < 1
    out = model.generate(
        **enc, max_new_tokens=params.max_new_tokens, do_sample=not greedy,
        temperature=None if greedy else params.temperature,
        top_p=None, top_k=None if greedy else (params.top_k or None),
        # (after temperature and top-k, where transformers puts its own top-p)
        logits_processor=LogitsProcessorList([FastTopP(params.top_p)] if nucleus else []),
        repetition_penalty=params.repetition_penalty, eos_token_id=eos_ids,
        pad_token_id=tok.pad_token_id, use_cache=True)
    model.train(was_training)
    P = enc["input_ids"].shape[1]
    response = out[:, P:]                                                    # [B, R]
    is_eos = torch.isin(response, torch.tensor(eos_ids))
    # tokens after the first EOS are padding; the EOS itself belongs to the response
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
    response_mask = ~after_eos
    finished = is_eos.any(-1).tolist()
    attention = torch.cat([enc["attention_mask"], response_mask.long()], dim=1)
    full_mask = torch.cat([torch.zeros_like(enc["attention_mask"]), response_mask.long()], dim=1)
    # decode without the EOS: an end token need not be a special token the tokenizer skips
    decoded = tok.batch_decode(response.masked_fill(~response_mask | is_eos, tok.pad_token_id),
                               skip_special_tokens=True)
    return Rollout(input_ids=out, attention_mask=attention, response_mask=full_mask, prompt_len=P,
                   texts=[t.strip() for t in decoded], finished=finished)


def generate(model, tok, prompts: list[list[dict]], params: SamplingParams | Sequence[SamplingParams],
             k: int = 1, batch_size: int = 16, progress: bool | tqdm = True) -> list[list[dict]]:
    """K responses per prompt: ``result[i][j] = {"text", "finished", "tokens", "params"}``.

    ``params`` may be a list: candidate j is sampled with ``params[j % len(params)]`` (e.g. the
    temperatures 0.3, 0.7, 1.0, 1.2 cycled over K = 4 candidates, as Llama 2 varied the
    temperature between its two candidates), and ``"params"`` is that index. Candidates with
    the same params are batched together, prompts sorted by length so each batch pads little.
    The seed of ``params[0]`` makes the whole call reproducible: the same prompts, params, k
    and batch size give the same texts. ``progress`` is a flag (a bar of its own on runs of 8
    or more responses) or a tqdm bar of the caller's to advance.
    """
    settings = [params] if isinstance(params, SamplingParams) else list(params)
    if not settings:
        raise ValueError("generate needs at least one SamplingParams")
    if k < 1 or batch_size < 1:
        raise ValueError("k and batch_size must be positive")
    if settings[0].seed is not None:
        torch.manual_seed(settings[0].seed)
    # prompt lengths in tokens (not characters: Chinese text packs more tokens per character)
    lengths = [len(ids) for ids in tok([render_chat(tok, m) for m in prompts],
                                       add_special_tokens=False)["input_ids"]] if prompts else []
    batches = []
    for s in range(len(settings)):  # one batch never mixes settings
        jobs = sorted((lengths[i], i, j) for i in range(len(prompts))
                      for j in range(s, k, len(settings)))
        batches += [(s, jobs[b:b + batch_size]) for b in range(0, len(jobs), batch_size)]
    result: list[list[dict | None]] = [[None] * k for _ in prompts]
    total = len(prompts) * k
    own_bar = isinstance(progress, bool)
    bar = tqdm(total=total, desc="generate", unit="resp",
               disable=not progress or total < 8) if own_bar else progress
    for s, batch in batches:
        roll = sample(model, tok, [prompts[i] for _, i, _ in batch], settings[s])
        n_tokens = roll.response_mask.sum(-1).tolist()
        for (_, i, j), text, done, n in zip(batch, roll.texts, roll.finished, n_tokens):
            result[i][j] = {"text": text, "finished": done, "tokens": int(n), "params": s}
        bar.update(len(batch))
    if own_bar:
        bar.close()
    return result  # type: ignore[return-value]
