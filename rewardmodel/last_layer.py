"""An encoder reward model's last layer, computed only at [CLS]: the one position its reward reads.

BERT-like classifiers read the reward from the first token of the last layer (BERT's pooler,
RoBERTa's and ELECTRA's heads). Every other position of the last layer feeds nothing the loss
uses: its keys and values are needed (the [CLS] query attends to all of them), its queries,
attention output, dense projections and feed-forward block are not. ``reading_cls`` makes the
last layer compute K and V for every token and the rest for [CLS] alone, and return hidden
states [B, 1, H], which the head reads exactly as before. Rewards and gradients are the same
as the full layer's up to float rounding; the saving is the feed-forward block (two thirds of
the layer's matmuls) and the Q/output projections for all but one token: on paper about
1/7 of a 6-layer MiniLM's layer products; measured, within the noise of a loaded machine
(BENCHMARKS.md).

Set ``PREFSTUDIO_FULL_LAST_LAYER=1`` to switch it off (benchmark ablations).
"""
from __future__ import annotations

import contextlib
import os
import sys
import types

from torch import nn

# model types whose classifier reads token 0 of the last layer and whose layers are BERT's
CLS_READERS = ("bert", "roberta", "xlm-roberta", "electra")


def install(seq_cls: nn.Module) -> nn.Module | None:
    """Give the last encoder layer of ``seq_cls`` (a ``*ForSequenceClassification``, possibly
    inside peft) the [CLS]-only path, off until ``reading_cls``; returns the layer, or None
    when the architecture is not one it covers."""
    if os.environ.get("PREFSTUDIO_FULL_LAST_LAYER", "0") == "1":
        return None
    inner = seq_cls.get_base_model() if hasattr(seq_cls, "get_base_model") else seq_cls
    if getattr(inner.config, "model_type", None) not in CLS_READERS or inner.config.is_decoder:
        return None
    backbone = getattr(inner, inner.base_model_prefix, None)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers:
        return None
    last = layers[-1]
    if not (hasattr(last, "feed_forward_chunk") and hasattr(last.attention, "self")
            and hasattr(last.attention.self, "query")):
        return None
    last.read_cls_only = False
    last.forward = types.MethodType(_forward, last)
    return last


@contextlib.contextmanager
def reading_cls(layer: nn.Module | None):
    """Within this block the layer installed by ``install`` computes [CLS] only."""
    if layer is None:
        yield
        return
    layer.read_cls_only = True
    try:
        yield
    finally:
        layer.read_cls_only = False


def _forward(layer, hidden_states, attention_mask=None, *args, **kwargs):
    extra = [*args, kwargs.get("cache"), kwargs.get("encoder_attention_mask")]
    if not layer.read_cls_only or any(x is not None for x in extra):
        return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attn = layer.attention.self
    batch, width, _ = hidden_states.shape
    head = attn.attention_head_size
    first = hidden_states[:, :1]                                                      # [B, 1, H]
    split = lambda x, n: x.view(batch, n, -1, head).transpose(1, 2)                   # [B, h, n, d]
    query = split(attn.query(first), 1)
    key = split(attn.key(hidden_states), width)
    value = split(attn.value(hidden_states), width)
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[:, :, :1]                                     # [B, 1, 1, T]
    eager = sys.modules[type(attn).__module__].eager_attention_forward
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)
    out, _ = attend(attn, query, key, value, attention_mask, scaling=attn.scaling,
                    dropout=attn.dropout.p if attn.training else 0.0)
    out = layer.attention.output(out.reshape(batch, 1, -1).contiguous(), first)         # [B, 1, H]
    return layer.feed_forward_chunk(out)                                              # [B, 1, H]
