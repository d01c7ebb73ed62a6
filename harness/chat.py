"""Rendering a chat as the model sees it: its chat template, or a plain transcript without one.

Both the policy (generation, SFT, DPO) and the decoder reward model use these, so a response is
tokenized the same way wherever it is scored or trained.
"""
from __future__ import annotations

from typing import Sequence


def render_plain(messages: Sequence[dict]) -> str:
    """A chat as "role: content" lines (encoder reward models; tokenizers without a template)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def render_chat(tok, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The text the model sees: its chat template, or ``render_plain`` plus an assistant cue."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt,
                                       tokenize=False)
    return render_plain(messages) + ("\nassistant: " if add_generation_prompt else "")


def render_reply(tok, prompt: Sequence[dict], response: str) -> tuple[str, str]:
    """(the rendered prompt up to where the reply starts, the prompt with the reply rendered as
    the assistant's turn). The second starts with the first; a template that restyles earlier
    turns, or no template, gets the reply and EOS appended instead."""
    head = render_chat(tok, prompt, add_generation_prompt=True)
    if getattr(tok, "chat_template", None):
        full = render_chat(tok, list(prompt) + [{"role": "assistant", "content": response}],
                           add_generation_prompt=False)
        if full.startswith(head):
            return head, full
    return head, head + response + (tok.eos_token or "")
