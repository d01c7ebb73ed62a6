"""(prompt, response) text -> model input for a reward model, and batches of it.

A decoder sees the chat rendered by its template (``harness.chat``: the prompt plus one
assistant turn holding the response); an encoder sees ``[CLS] prompt [SEP] response [SEP]``
with the prompt as "role: content" lines. Long prompts lose their oldest tokens first: the
response is what is being scored, so it survives truncation.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from harness.chat import render_plain, render_reply
from harness.packing import pack_shared_prompts


class Encoded(NamedTuple):
    """One (prompt, response) as model input: token ids, token types (encoders only) and how
    many of the ids are the prompt (decoders: lets responses of one prompt share it)."""
    ids: list[int]
    token_types: list[int] | None
    prompt_len: int


def fit_lengths(n_prompt: int, n_response: int, budget: int) -> tuple[int, int]:
    """How many prompt tokens (kept from the END) and response tokens (from the START) fit.

    The response is kept whole when it fits beside at least a quarter of the budget of prompt;
    only a response that is itself too long is cut, and then from its end.
    """
    keep_response = min(n_response, budget - min(n_prompt, budget // 4))
    keep_prompt = min(n_prompt, budget - keep_response)
    return keep_prompt, keep_response


def encode_decoder(tok, prompts: Sequence[Sequence[dict]], responses: Sequence[str],
                   max_length: int) -> list[Encoded]:
    heads, fulls = [], []
    for prompt, response in zip(prompts, responses):
        head, full = render_reply(tok, prompt, response)
        heads.append(len(head))
        fulls.append(full)
    enc = tok(fulls, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, n_chars in zip(enc["input_ids"], enc["offset_mapping"], heads):
        # the prompt is every token that starts inside the rendered prompt: exact even
        # when the tokenizer merges across the boundary
        n_prompt = sum(1 for start, _ in offsets if start < n_chars)
        keep_p, keep_r = fit_lengths(n_prompt, len(ids) - n_prompt, max_length)
        out.append(Encoded(ids[n_prompt - keep_p:n_prompt + keep_r], None, keep_p))
    return out


def encode_encoder(tok, prompts: Sequence[Sequence[dict]], responses: Sequence[str],
                   max_length: int) -> list[Encoded]:
    p_ids = tok([render_plain(p) for p in prompts], add_special_tokens=False)["input_ids"]
    r_ids = tok(list(responses), add_special_tokens=False)["input_ids"]
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    out = []
    for p, r in zip(p_ids, r_ids):
        keep_p, keep_r = fit_lengths(len(p), len(r), max_length - 3)
        first = [cls_id] + p[len(p) - keep_p:] + [sep_id]
        second = r[:keep_r] + [sep_id]
        out.append(Encoded(first + second, [0] * len(first) + [1] * len(second), len(first)))
    return out


def pad_batch(encoded: Sequence[Encoded], pad_id: int, with_types: bool) -> dict[str, torch.Tensor]:
    """One sequence per response, right-padded to the longest of this batch (dynamic padding)."""
    width = max(len(e.ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)   # [B, T]
    mask = torch.zeros((len(encoded), width), dtype=torch.long)                # [B, T]
    types = torch.zeros((len(encoded), width), dtype=torch.long) if with_types else None
    for i, (ids, tt, _) in enumerate(encoded):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
        if types is not None:
            types[i, :len(tt)] = torch.tensor(tt)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def pack_batch(groups: Sequence[Sequence[Encoded]], pad_id: int) -> dict[str, torch.Tensor]:
    """Decoders: each group's responses behind ONE copy of their common prompt
    (``harness.packing``). Responses whose (truncated) prompts differ get rows of their own.
    ``read_index`` says where in the flattened [R·T] hidden states each reward is read, in
    input order: where HF's ``*ForSequenceClassification`` would, the last non-pad token."""
    rows, owners = [], []   # rows: (prompt, responses); owners: (group, member) of each response
    for g, group in enumerate(groups):
        by_prompt: dict[tuple, list[int]] = {}
        for i, e in enumerate(group):
            by_prompt.setdefault(tuple(e.ids[:e.prompt_len]), []).append(i)
        for prompt, members in by_prompt.items():
            rows.append((list(prompt), [group[i].ids[len(prompt):] for i in members]))
            owners.append([(g, i) for i in members])
    packed, spans = pack_shared_prompts(rows, pad_id)
    ids, width = packed["input_ids"], packed["segments"].shape[1]
    rows_ids = ids.tolist()
    firsts = [sum(len(group) for group in groups[:g]) for g in range(len(groups))]
    reads = [0] * sum(len(group) for group in groups)
    for r, (row_spans, members) in enumerate(zip(spans, owners)):
        for (start, end), (g, i) in zip(row_spans, members):
            last = max((j for j in range(start, end) if rows_ids[r][j] != pad_id), default=end - 1)
            reads[firsts[g] + i] = r * width + last
    return {"input_ids": ids, "attention_mask": packed["attention_mask"],
            "position_ids": packed["position_ids"], "read_index": torch.tensor(reads)}   # [N]


def scoring_groups(encoded: Sequence[Encoded], share_prompt: bool, batch_size: int
                   ) -> list[list[int]]:
    """Indices of ``encoded`` in groups scored together, shortest first: with ``share_prompt``
    the responses to one prompt (at most ``batch_size`` a group) go behind one copy of it (K
    samples per prompt cost one prompt pass, not K); otherwise each response alone."""
    if not share_prompt:
        groups = [[i] for i in range(len(encoded))]
    else:
        by_prompt: dict[tuple, list[int]] = {}
        for i, e in enumerate(encoded):
            by_prompt.setdefault(tuple(e.ids[:e.prompt_len]), []).append(i)
        groups = [members[j:j + batch_size] for members in by_prompt.values()
                  for j in range(0, len(members), batch_size)]
    return sorted(groups, key=lambda g: sum(len(encoded[i].ids) for i in g))
