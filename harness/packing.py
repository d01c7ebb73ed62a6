"""Several responses behind ONE copy of their prompt, in one row (prefix sharing).

A row is ``prompt, response_1, ..., response_K``. A 4-D attention mask lets response k see the
prompt and itself (causally), never another response, and its position ids continue from the
prompt's, so each response is computed exactly as if it followed the prompt alone, while the
prompt goes through the model once instead of K times (Wang et al. 2024, "Accelerating Direct
Preference Optimization with Prefix Sharing"). The reward model packs a comparison's K
responses this way; DPO packs a pair's chosen and rejected reply.
"""
from __future__ import annotations

from typing import Sequence

import torch

PAD_SEGMENT = -1   # segment ids: -1 padding, 0 prompt, k the k-th response (from 1)


def pack_shared_prompts(groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                        pad_id: int, aligned: bool = False
                        ) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, int]]]]:
    """One row per ``(prompt ids, [response ids, ...])`` group.

    ``aligned=False`` packs each row tightly and right-pads it. ``aligned=True`` gives every
    row the same columns: prompts left-padded to the longest prompt P, then response k padded
    to the longest k-th response, so response k sits at the same columns in every row (DPO
    reads chosen tokens at [P, P + C) and rejected ones after).

    Returns ({input_ids [B, T], position_ids [B, T], segments [B, T], attention_mask
    [B, 1, T, T] (additive: 0 or the float32 minimum)}, spans), where ``spans[b][k]`` is the
    (start, end) columns of row b's k-th response.
    """
    if aligned:
        P = max(len(prompt) for prompt, _ in groups)
        K = max(len(responses) for _, responses in groups)
        slots = [max(len(rs[k]) for _, rs in groups if k < len(rs)) for k in range(K)]
    rows, spans = [], []
    for prompt, responses in groups:
        lead = P - len(prompt) if aligned else 0
        ids = [pad_id] * lead + list(prompt)
        pos = [0] * lead + list(range(len(prompt)))
        seg = [PAD_SEGMENT] * lead + [0] * len(prompt)
        row_spans = []
        for k, response in enumerate(responses, start=1):
            start = len(ids)
            ids += response
            pos += range(len(prompt), len(prompt) + len(response))
            seg += [k] * len(response)
            row_spans.append((start, len(ids)))
            fill = slots[k - 1] - len(response) if aligned else 0
            ids, pos, seg = ids + [pad_id] * fill, pos + [0] * fill, seg + [PAD_SEGMENT] * fill
        rows.append((ids, pos, seg))
        spans.append(row_spans)
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)            # [B, T]
    positions = torch.zeros((len(rows), width), dtype=torch.long)                   # [B, T]
    segments = torch.full((len(rows), width), PAD_SEGMENT, dtype=torch.long)        # [B, T]
    for r, (ids, pos, seg) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        positions[r, :len(ids)] = torch.tensor(pos)
        segments[r, :len(ids)] = torch.tensor(seg)
    return {"input_ids": input_ids, "position_ids": positions, "segments": segments,
            "attention_mask": shared_prompt_mask(segments)}, spans


def shared_prompt_mask(segments: torch.Tensor) -> torch.Tensor:
    """The additive attention mask [B, 1, T, T] for segment ids [B, T]: causal, a token sees
    the prompt (segment 0) and its own segment, padding sees only itself (no empty rows)."""
    width = segments.shape[1]
    q, k = segments[:, :, None], segments[:, None, :]                              # [B, T, 1], [B, 1, T]
    causal = torch.ones(width, width, dtype=torch.bool).tril()                     # [T, T]
    allowed = causal & (k != PAD_SEGMENT) & ((k == 0) | (k == q))                   # [B, T, T]
    allowed |= torch.eye(width, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]      # [B, 1, T, T]
