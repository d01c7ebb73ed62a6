"""``local:SPEC``: a causal LM judging through transformers, no sampling.

The caller loads the model and tokenizer (annotate never loads models) and passes them in.
For each comparison the judge prompt goes through the tokenizer's chat template, the
assistant turn is started with ``Verdict:``, and one forward pass gives the next-token
distribution. The options' probabilities (each option's single-token spellings, ``A`` and
``" A"``, summed) are normalised over the options (Lee et al. 2023, RLAIF §2.1.1):

    p(A) = P(A | prompt) / (P(A | prompt) + P(B | prompt))

With ``rationale_first`` the model first writes its explanation greedily, then ``Verdict:``
is appended and the same distribution is read.
"""
from __future__ import annotations

import re

import torch

from .base import Judge, JudgeConfigError, Verdict
from .prompt import VERDICT_PREFIX, Comparison, judge_messages


class LocalJudge(Judge):
    def __init__(self, model, tokenizer, name: str, *, labels: tuple[str, str] = ("A", "B"),
                 rationale_first: bool = False, batch_size: int = 4, rationale_tokens: int = 128,
                 max_context_chars: int = 6000, max_response_chars: int = 3000):
        self.model = model.eval()
        self.tok = tokenizer
        self.name = name
        self.labels = labels
        self.rationale_first = rationale_first
        self.batch_size = max(1, batch_size)
        self.rationale_tokens = rationale_tokens
        self.max_context_chars, self.max_response_chars = max_context_chars, max_response_chars
        self.option_ids = [option_token_ids(tokenizer, x) for x in labels]
        if set(self.option_ids[0]) & set(self.option_ids[1]):
            raise JudgeConfigError(f"the options {labels} share a token in this tokenizer")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token

    def judge(self, comparisons: list[Comparison]) -> list[Verdict]:
        prompts = [self._chat(c) for c in comparisons]
        # Batch prompts of similar length together: less padding to push through the model.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Verdict | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, verdict in zip(chunk, self._batch([prompts[i] for i in chunk])):
                out[i] = verdict
        return out

    def _batch(self, prompts: list[str]) -> list[Verdict]:
        rationales: list[str | None] = [None] * len(prompts)
        if self.rationale_first:
            rationales = self._generate(prompts)
            prompts = [p + r + "\n" + VERDICT_PREFIX for p, r in zip(prompts, rationales)]
        else:
            prompts = [p + VERDICT_PREFIX for p in prompts]
        probs = self._next_token_probs(prompts)                       # (B, V)
        verdicts = []
        for row, rationale in zip(probs, rationales):
            mass = [float(row[ids].sum()) for ids in self.option_ids]  # P(A), P(B)
            total = mass[0] + mass[1]
            p_first = mass[0] / total if total > 0 else 0.5
            verdicts.append(Verdict(
                p_first, hard=False, text=self.labels[0] if p_first >= 0.5 else self.labels[1],
                rationale=rationale,
                info={"p_options": {x: m for x, m in zip(self.labels, mass)},
                      "option_mass": total}))  # how much of the distribution named an option
        return verdicts

    def _chat(self, c: Comparison) -> str:
        messages = judge_messages(c, self.labels, self.rationale_first,
                                  self.max_context_chars, self.max_response_chars)
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant: "

    def _encode(self, texts: list[str]) -> dict:
        side = self.tok.padding_side
        self.tok.padding_side = "left"  # the last position is then every row's next token
        try:
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tok.padding_side = side
        return {k: v.to(self.model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def _next_token_probs(self, texts: list[str]) -> torch.Tensor:
        enc = self._encode(texts)
        mask = enc["attention_mask"]                                   # (B, T)
        # Left padding shifts every row; positions must count real tokens only.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Only the last position's logits are needed: skip the LM head everywhere else.
        logits = self.model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1, :]  # (B, V)
        return torch.softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def _generate(self, texts: list[str]) -> list[str]:
        enc = self._encode(texts)
        out = self.model.generate(**enc, max_new_tokens=self.rationale_tokens, do_sample=False,
                                  pad_token_id=self.tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        # Stop at a verdict the model wrote itself: we append our own and read its probability.
        return [re.split(r"(?i)verdict", t, maxsplit=1)[0].rstrip() for t in texts]


def option_token_ids(tokenizer, option: str) -> list[int]:
    """Ids of the single-token spellings of an option: ``A`` and ``" A"`` (after ``Verdict:``)."""
    ids = set()
    for spelling in (option, " " + option):
        enc = tokenizer.encode(spelling, add_special_tokens=False)
        if len(enc) == 1 and enc[0] != tokenizer.unk_token_id:
            ids.add(enc[0])
    if not ids:
        raise JudgeConfigError(f"the verdict option {option!r} is not a single token for this "
                               "tokenizer: choose other --labels")
    return sorted(ids)
