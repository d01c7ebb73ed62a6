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


def pack_groups_in_rows(groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                        pad_id: int, width: int) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """Several ``(prompt ids, [response ids, ...])`` groups per row, each behind its own prompt
    and blind to the other groups of its row (sequence packing without cross-attention), so
    short groups share a row instead of each being padded to the longest.

    Groups fill rows in the order given, a new row when the next group would pass ``width``
    (a group longer than that gets a row of its own); rows are right-padded to the longest.
    Position ids restart at 0 for each group: every group is computed exactly as alone.
    Returns ({input_ids, position_ids, segments [R, T], attention_mask [R, 1, T, T]},
    columns) where ``columns[g][k]`` lists the flat indices (row·T + column) of group g's
    part k: k = 0 its prompt, k ≥ 1 its k-th response.
    """
    rows: list[tuple[list, list, list, list]] = []      # ids, positions, segments, group of each
    placed: list[tuple[int, list[list[int]]]] = []      # per group: (row, [columns of each part])
    for g, (prompt, responses) in enumerate(groups):
        size = len(prompt) + sum(len(r) for r in responses)
        if not rows or (rows[-1][0] and len(rows[-1][0]) + size > width):
            rows.append(([], [], [], []))
        ids, pos, seg, owner = rows[-1]
        parts = []
        for k, part in enumerate([prompt, *responses]):
            first = len(prompt) if k else 0
            parts.append(list(range(len(ids), len(ids) + len(part))))
            ids += part
            pos += range(first, first + len(part))
            seg += [k] * len(part)
            owner += [g] * len(part)
        placed.append((len(rows) - 1, parts))
    T = max(len(r[0]) for r in rows)
    tensors = {name: torch.full((len(rows), T), fill, dtype=torch.long)
               for name, fill in (("input_ids", pad_id), ("position_ids", 0),
                                  ("segments", PAD_SEGMENT), ("groups", -1))}
    for r, row in enumerate(rows):
        for name, values in zip(("input_ids", "position_ids", "segments", "groups"), row):
            tensors[name][r, :len(values)] = torch.tensor(values)
    columns = [[[row * T + c for c in part] for part in parts] for row, parts in placed]
    groups_t = tensors.pop("groups")
    return {**tensors, "attention_mask": shared_prompt_mask(tensors["segments"], groups_t)}, columns


def shared_prompt_mask(segments: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """The additive attention mask [B, 1, T, T] for segment ids [B, T]: causal, a token sees
    the prompt (segment 0) and its own segment, padding sees only itself (no empty rows).
    With ``groups`` [B, T] (packed rows), a token sees only tokens of its own group."""
    width = segments.shape[1]
    q, k = segments[:, :, None], segments[:, None, :]                              # [B, T, 1], [B, 1, T]
    causal = torch.ones(width, width, dtype=torch.bool).tril()                     # [T, T]
    allowed = causal & (k != PAD_SEGMENT) & ((k == 0) | (k == q))                   # [B, T, T]
    if groups is not None:
        allowed &= groups[:, :, None] == groups[:, None, :]
    allowed |= torch.eye(width, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]      # [B, 1, T, T]
