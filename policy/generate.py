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
from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper
from transformers.cache_utils import Cache, DynamicLayer

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


def nucleus(probs: torch.Tensor, top_p: float, k: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The nucleus of top-p sampling (Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration"): the smallest set of most likely tokens whose probability reaches ``top_p``.
    A token is in it when the mass ranked above it is below ``top_p`` (the first always is).

        probs  [B, V]  ->  index [B, W], weight [B, W]: candidate token ids and their
                           probabilities, 0 outside the nucleus (draw with multinomial(weight))

    Only the ``k`` most likely tokens are ranked (W = k) when they hold ``top_p`` of the mass,
    as they almost always do; a row where they do not (a very flat distribution) is sorted in
    full and W widens to its nucleus. Sorting 49,152 probabilities for 32 rows took 307 ms a
    step on one core, the top 256 18 ms; drawing among W tokens instead of V saves another
    30 ms a step (BENCHMARKS.md, generation). The kept tokens are transformers'
    ``TopPLogitsWarper``'s, up to ties in rounding (tests/test_generate.py)."""
    def kept(sorted_probs: torch.Tensor) -> torch.Tensor:        # [b, w] sorted descending
        above = sorted_probs.cumsum(-1) - sorted_probs           # mass ranked above each token
        keep = above < top_p
        keep[:, 0] = True
        return sorted_probs * keep
    top, index = probs.topk(min(k, probs.shape[-1]), dim=-1)    # [B, k]
    weight = kept(top)
    flat = (top.sum(-1) < top_p).nonzero().flatten()             # the nucleus reaches past k
    if len(flat):
        full, full_index = probs[flat].sort(-1, descending=True)  # [b, V]
        full_weight = kept(full)
        width = max(int((full_weight > 0).sum(-1).max()), index.shape[1])
        pad = width - index.shape[1]
        index = torch.nn.functional.pad(index, (0, pad))
        weight = torch.nn.functional.pad(weight, (0, pad))
        index[flat], weight[flat] = full_index[:, :width], full_weight[:, :width]
    return index, weight


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer with room reserved for the tokens still to come: each step writes its
    key and value in place instead of copying the whole cache (transformers' DynamicLayer does
    ``torch.cat`` every step: 0.95 s of 12.5 s at batch 32, BENCHMARKS.md)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        B, H, L, D = keys.shape
        self.key_buffer = keys.new_empty(B, H, L + room, D)
        self.value_buffer = values.new_empty(B, values.shape[1], L + room, values.shape[-1])
        self.key_buffer[:, :, :L], self.value_buffer[:, :, :L] = keys, values
        self.keys, self.values = self.key_buffer[:, :, :L], self.value_buffer[:, :, :L]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        L = self.keys.shape[-2]
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self.keys, self.values = self.key_buffer[:, :, :L], self.value_buffer[:, :, :L]

    def update(self, key_states, value_states, *args, **kwargs):
        L, n = self.keys.shape[-2], key_states.shape[-2]
        self.key_buffer[:, :, L:L + n] = key_states
        self.value_buffer[:, :, L:L + n] = value_states
        self.keys, self.values = self.key_buffer[:, :, :L + n], self.value_buffer[:, :, :L + n]
        return self.keys, self.values


def _prefill(model, input_ids, attention_mask, room: int, rows_per_call: int = 8):
    """Run the prompts through the model: (logits of each prompt's last token [B, V], a cache
    with ``room`` more places). Prompts go ``rows_per_call`` at a time, each group cut to its
    own longest prompt, so the short prompts of a left-padded batch do not pay for the long
    one's padding (sorted batches keep each group's lengths close); the groups' keys and
    values are then left-padded to the batch's width (masked, as padding always is)."""
    B, P = input_ids.shape
    lengths = attention_mask.sum(-1)                                        # [B]
    order = lengths.argsort()
    logits = None
    groups: list[tuple] = []   # (rows, width, [(keys, values) per layer]) of each call
    for g in range(0, B, rows_per_call):
        rows = order[g:g + rows_per_call]
        width = int(lengths[rows].max())
        ids, mask = input_ids[rows, P - width:], attention_mask[rows, P - width:]
        # the last position by index, not logits_to_keep=1: its slice is a strided view that
        # torch multiplies with the [V, H] output matrix expanded per row (73 ms, not 36)
        out = model(input_ids=ids, attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                    logits_to_keep=torch.tensor([width - 1]))
        if logits is None:
            logits = out.logits.new_empty(B, out.logits.shape[-1])
        logits[rows] = out.logits[:, -1]
        groups.append((rows, width, [(layer.keys, layer.values) for layer in out.cache.layers]))
    layers = []
    for i in range(len(groups[0][2])):
        k0, v0 = groups[0][2][i]
        k = k0.new_zeros(B, k0.shape[1], P, k0.shape[-1])
        v = v0.new_zeros(B, v0.shape[1], P, v0.shape[-1])
        for rows, width, kv in groups:
            k[rows, :, P - width:], v[rows, :, P - width:] = kv[i]
        layers.append(_GrowingLayer(k, v, room))
    return logits, Cache(layers=layers)


def _next_tokens(scores: torch.Tensor, sequences: torch.Tensor | None, params: SamplingParams
                 ) -> torch.Tensor:
    """One token per row from the last position's logits [B, V] -> [B]: repetition penalty
    (Keskar et al. 2019) and top-k as transformers' processors apply them, then temperature
    and a draw from the top-p nucleus (greedy when temperature is 0)."""
    scores = scores.float()
    if params.repetition_penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)(sequences, scores)
    if params.temperature <= 0:
        return scores.argmax(-1)
    scores = scores / params.temperature
    if params.top_k:
        scores = TopKLogitsWarper(params.top_k)(sequences, scores)
    probs = scores.softmax(-1)
    if params.top_p is None or params.top_p >= 1:
        return torch.multinomial(probs, 1).squeeze(1)
    index, weight = nucleus(probs, params.top_p)
    return index.gather(1, torch.multinomial(weight, 1)).squeeze(1)


def _eos_ids(model, tok) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


@torch.no_grad()
def sample(model, tok, prompts: list[list[dict]], params: SamplingParams) -> Rollout:
    """One response per prompt, sampled in one batch (greedy when temperature == 0).

    The decode loop is our own rather than ``model.generate``: the same model calls and the
    same distribution, minus four costs ``generate`` pays at batch 32 on a CPU (profiled in
    BENCHMARKS.md): the prefill of padding, a KV cache copied every step, a draw over the
    whole vocabulary when top-p keeps a few hundred tokens, and forward passes for rows that
    have already ended (dropped from the batch once a quarter of it has)."""
    texts = [render_chat(tok, messages) for messages in prompts]
    tok.padding_side, tok.truncation_side = "left", "left"
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True,
              max_length=params.max_prompt_tokens, add_special_tokens=False)
    eos_ids = torch.tensor(_eos_ids(model, tok))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(eos_ids[0])
    was_training = model.training
    model.eval()
    ids, mask = enc["input_ids"], enc["attention_mask"]                     # [B, P]
    B, P = ids.shape
    logits, cache = _prefill(model, ids, mask, room=params.max_new_tokens)
    position = mask.sum(-1, keepdim=True)                                   # [A, 1] next position
    rows = torch.arange(B)                     # [A] the batch rows the model still runs
    done = torch.zeros(B, dtype=torch.bool)
    out = torch.full((B, P + params.max_new_tokens), pad_id, dtype=ids.dtype)   # [B, P + R]
    out[:, :P] = ids
    steps = 0
    for step in range(params.max_new_tokens):
        # the token history only the repetition penalty reads (the buffer is filled in place)
        history = out[rows, :P + step] if params.repetition_penalty != 1.0 else None
        drawn = _next_tokens(logits, history, params).masked_fill(done[rows], pad_id)  # [A]
        out[rows, P + step] = drawn
        steps = step + 1
        done[rows] |= torch.isin(drawn, eos_ids)
        if done.all() or step == params.max_new_tokens - 1:
            break
        finished = done[rows]
        if finished.sum() * 4 >= len(rows):
            # a quarter of the rows have ended: stop running them (copying the cache once
            # costs less than a quarter of a batch's forward passes from here on)
            keep = (~finished).nonzero().flatten()
            rows, drawn, mask, position = rows[keep], drawn[keep], mask[keep], position[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype)], 1)
        logits = model(input_ids=drawn[:, None], attention_mask=mask, position_ids=position,
                       cache=cache, use_cache=True).logits[:, -1]
        position = position + 1
    model.train(was_training)
    out = out[:, :P + steps]                 # the steps run: all rows ended before the last
    response = out[:, P:]                                                   # [B, R]
    is_eos = torch.isin(response, eos_ids)
    # tokens after the first EOS are padding; the EOS itself belongs to the response
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
    response_mask = ~after_eos
    finished = is_eos.any(-1).tolist()
    attention = torch.cat([enc["attention_mask"], response_mask.long()], dim=1)
    full_mask = torch.cat([torch.zeros_like(enc["attention_mask"]), response_mask.long()], dim=1)
    # decode without the EOS: an end token need not be a special token the tokenizer skips
    decoded = tok.batch_decode(response.masked_fill(~response_mask | is_eos, pad_id),
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
