"""Supervised fine-tuning on chats: the loss is on every assistant turn and on nothing else.

Of the three ways to train on a multi-turn chat (only the last reply; one example per reply;
every reply in one pass), prefstudio uses the third (seed 002 calls it the most reasonable):

    input  = <sys><user_1><asst_1><user_2><asst_2><user_3><asst_3>
    labels =  ---  ------ <asst_1> ------ <asst_2> ------ <asst_3>

An assistant turn's labels cover its text and its end-of-turn token (so the model learns to
stop), not the role header before it. Spans are found on the rendered chat template: the
text of messages[:i] with the generation prompt is a prefix of the text of messages[:i+1], and
what lies between is the assistant's turn. Tokens are mapped to those character spans with
the tokenizer's offsets, so the labels are exactly the tokens the model sees.

Packing (optional) puts several chats in one row; position ids restart at each chat, and
transformers turns restarting position ids (with no attention mask) into a block-diagonal
causal mask, so packed chats never attend to each other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from harness.chat import render_chat

from .losses import IGNORE, token_nll
from .train_utils import PolicyRun, PolicySettings, load_for_training



@dataclass
class SFTConfig(PolicySettings):
    lr: float = 2e-4
    max_len: int = 1024          # tokens per chat (longer chats are cut at the end)
    packing: bool = False        # several chats per row, up to max_len tokens
    max_steps: int = 200
    # bf16 products where the hardware makes them fast (harness/precision.py): on 128 HH chats,
    # 32 steps, the held-out NLL fell 2.672 -> 2.360 in bf16 and -> 2.356 in fp32 (BENCHMARKS.md)
    precision: str = "auto"


# --- data ---------------------------------------------------------------------------------

def assistant_spans(tok, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character span [start, end) of every assistant turn."""
    text = render_chat(tok, list(messages), add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tok, list(messages[:i]), add_generation_prompt=True) if i else ""
        upto = render_chat(tok, list(messages[:i + 1]), add_generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ValueError("the tokenizer's chat template does not render a chat as a prefix "
                             "of its continuation; cannot locate assistant turns")
        # the trailing newline after the end-of-turn token is the template's, not the reply's
        spans.append((len(before), len(upto.rstrip())))
    return text, spans


def tokenize_chat(tok, messages: Sequence[dict], max_len: int,
                  last_turn_only: bool = False) -> dict | None:
    """{"input_ids", "labels"} (lists) with labels on assistant tokens only, or None when
    nothing trainable is left after cutting to ``max_len``."""
    text, spans = assistant_spans(tok, messages)
    if last_turn_only:
        spans = spans[-1:]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_len]
    labels = [IGNORE] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"][:max_len]):
        if any(s <= start and end <= e and end > start for s, e in spans):
            labels[t] = ids[t]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def pack(examples: list[dict], max_len: int) -> list[dict]:
    """First-fit-decreasing bins of whole chats; each row gets restarting position ids."""
    rows: list[dict] = []
    for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(ex["input_ids"])
        row = next((r for r in rows if len(r["input_ids"]) + n <= max_len), None)
        if row is None:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += ex["input_ids"]
        row["labels"] += ex["labels"]
        row["position_ids"] += list(range(n))
    return rows


def collate(rows: list[dict], pad_id: int) -> dict:
    """Right-pad to the longest row. Packed rows carry position ids and no attention mask
    (padding is one more 'chat' of its own); plain rows carry an attention mask."""
    T = max(len(r["input_ids"]) for r in rows)
    pad = [T - len(r["input_ids"]) for r in rows]
    batch = {
        "input_ids": torch.tensor([r["input_ids"] + [pad_id] * p for r, p in zip(rows, pad)]),
        "labels": torch.tensor([r["labels"] + [IGNORE] * p for r, p in zip(rows, pad)]),
    }                                                                        # [B, T]
    if "position_ids" in rows[0]:
        batch["position_ids"] = torch.tensor([r["position_ids"] + list(range(p))
                                              for r, p in zip(rows, pad)])
    else:
        batch["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * p
                                                for r, p in zip(rows, pad)])
    return batch


def sft_loss(model, batch: dict) -> tuple[torch.Tensor, int]:
    """The batch's mean ``token_nll`` over its labelled tokens: (loss, labelled tokens).

    Only the positions that predict a labelled token reach the LM head (a fifth of SmolLM2's
    FLOPs per token): the forward pass (through ``model``, so DDP sees it) returns the final
    hidden states, and the frozen head runs on the picked ones, not on prompts and padding.
    """
    kwargs = {"position_ids": batch["position_ids"]} if "position_ids" in batch else {
        "attention_mask": batch["attention_mask"]}
    out = model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1,
                output_hidden_states=True, **kwargs)
    targets = batch["labels"][:, 1:]                                                # [B, T−1]
    keep = targets != IGNORE
    picked = out.hidden_states[-1][:, :-1][keep]                                   # [N, H]
    head = getattr(model, "module", model).get_output_embeddings()
    n = int(keep.sum())
    return token_nll(head(picked), targets[keep]).sum() / max(n, 1), n


def build_examples(tok, chats: Sequence[Sequence[dict]], max_len: int,
                   last_turn_only: bool = False, packing: bool = False) -> list[dict]:
    examples = [e for e in (tokenize_chat(tok, c, max_len, last_turn_only) for c in chats) if e]
    if not examples:
        raise ValueError(f"no chat has an assistant turn within the first {max_len} tokens")
    return pack(examples, max_len) if packing else examples


def chats_from_pairs(pairs) -> list[list[dict]]:
    """SFT on preference data: each pair's prompt followed by its chosen response."""
    return [list(p.prompt) + [{"role": "assistant", "content": p.chosen}] for p in pairs]


def read_chats(path: str | Path) -> list[list[dict]]:
    """A JSONL file of {"messages": [{"role", "content"}, ...]} with at least one assistant turn."""
    chats = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                chats.append(_check_chat(json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
            except ValueError as err:
                raise ValueError(f"{path}:{n}: {err}") from None
    if not chats:
        raise ValueError(f"{path}: no chats")
    return chats


def _check_chat(row) -> list[dict]:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError('messages: missing or empty (each line is {"messages": [...]})')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}].role: must be system, user or assistant")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise ValueError(f"messages[{i}].content: must be a non-empty string")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("messages: no assistant turn to train on")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- training -----------------------------------------------------------------------------

def train_sft(config: SFTConfig, chats: Sequence[Sequence[dict]], out_dir: str | Path, *,
              parents: Sequence[str] = (), data_hash: str | None = None,
              label_ids: Sequence[str] = ()) -> Path:
    """Fine-tune the policy's LoRA adapter on the assistant turns of ``chats``."""
    model, tok = load_for_training(config)
    examples = build_examples(tok, chats, config.max_len, packing=config.packing)
    with PolicyRun(config, out_dir, "sft", model, tok, parents=parents, data_hash=data_hash,
                     label_ids=label_ids) as run:
        run.log.log(f"{len(chats)} chats -> {len(examples)} rows (packing={config.packing})")
        batches = run.batches(examples, partial(collate, pad_id=tok.pad_token_id))
        total = sft_steps(run, batches, run.total_steps)
        return run.finish(final_loss=total, examples=len(chats))


def sft_steps(run, batches, until: int) -> float:
    """Optimizer steps of the SFT loss on ``batches`` until ``run.step`` reaches ``until``
    (train sft, each rejection-sampling / ReST Improve step, SL-CAI); the last step's loss
    (NaN when no step was left to take)."""
    total = float("nan")
    while run.step < until:
        total, tokens = 0.0, 0
        for batch in run.accumulate(batches):
            loss, n = sft_loss(run.model, batch)
            run.backward(loss)
            total, tokens = total + loss.item() / run.config.grad_accum, tokens + n
        grad_norm = run.optimizer_step()
        run.metric(loss=total, tokens=tokens, grad_norm=grad_norm, lr=run.lr)
        run.maybe_checkpoint()
    return total
