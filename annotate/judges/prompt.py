"""The judge prompt (published in docs/judges.md) and reading a verdict out of an answer.

One comparison shows the conversation and two responses, labelled A and B in the order
shown, and asks which is better by one principle. The answer is a single verdict token
(``A``/``B`` by default); with ``rationale_first`` the judge first explains, then ends with
``Verdict: A`` (chain-of-thought before the verdict, as in Lee et al. 2023, RLAIF §3.1).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .principles import Principle

SYSTEM = ("You are an impartial judge. You compare two responses of an AI assistant to the same "
          "conversation and decide which one is better by this principle:\n\n"
          "{name}: {text}\n\n"
          "Judge only by the principle. Do not let the order of the responses or their length "
          "influence you.")

USER = ("[Conversation]\n{conversation}\n\n"
        "[Response {a}]\n{first}\n\n"
        "[Response {b}]\n{second}\n\n"
        "Which response is better by the principle of {name}? ")
ASK_DIRECT = "Answer with one letter: {a} or {b}."
ASK_RATIONALE = ("First explain in two or three sentences which response follows the principle "
                 "better. Then end with a line \"Verdict: {a}\" or \"Verdict: {b}\".")

# What the local judge appends after the chat template's assistant header before reading the
# next-token distribution: the verdict token then comes right after this prefix.
VERDICT_PREFIX = "Verdict:"

_STRIP = " \t\n\r*_`'\"()[]{}.:,;!"


@dataclass(frozen=True)
class Comparison:
    """Two responses to one conversation, in the order the judge sees them."""
    messages: list[dict]          # the conversation, ending with the user's turn
    first: str                    # shown as A
    second: str                   # shown as B
    principle: Principle


def render_conversation(messages: list[dict], max_chars: int) -> str:
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    text = "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content'].strip()}" for m in messages)
    if len(text) > max_chars:  # keep the end: the turn being answered matters most
        text = "…" + text[-max_chars:]
    return text


def _clip(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[:max_chars] + "…"


def judge_messages(c: Comparison, labels: tuple[str, str], rationale_first: bool,
                   max_context_chars: int = 6000, max_response_chars: int = 3000) -> list[dict]:
    """The chat sent to the judge for one comparison."""
    a, b = labels
    ask = (ASK_RATIONALE if rationale_first else ASK_DIRECT).format(a=a, b=b)
    return [
        {"role": "system", "content": SYSTEM.format(name=c.principle.name, text=c.principle.text)},
        {"role": "user", "content": USER.format(
            conversation=render_conversation(c.messages, max_context_chars), a=a, b=b,
            first=_clip(c.first, max_response_chars), second=_clip(c.second, max_response_chars),
            name=c.principle.name) + ask},
    ]


def normalise_token(token: str) -> str:
    """``" A"``, ``"A."``, ``"**A**"`` all name option ``A``."""
    return token.strip(_STRIP)


def parse_verdict_text(text: str, labels: tuple[str, str], rationale_first: bool) -> str | None:
    """The option a text answer names, or None when it names none (or both, ambiguously)."""
    opts = "|".join(re.escape(x) for x in labels)
    verdicts = re.findall(rf"verdict\W*(?:response\s*)?({opts})(?![A-Za-z0-9])", text, re.I)
    verdicts = [v for v in verdicts if v in labels]
    if verdicts:
        return verdicts[-1]
    if rationale_first:
        return None
    # A direct answer: the first word, e.g. "A", "B.", "**A**", "Response B".
    m = re.match(rf"^\W*(?:response\s+)?({opts})(?![A-Za-z0-9])", text.strip(), re.I)
    if m and m.group(1) in labels:
        return m.group(1)
    return None


def verdict_from_logprobs(tokens: list[dict], labels: tuple[str, str],
                          rationale_first: bool) -> tuple[float, dict] | None:
    """p(first option) from OpenAI-style per-token logprobs, or None if no token is a verdict.

    ``tokens``: ``[{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]``. The verdict
    position is the first token naming an option (direct answer) or the first after the last
    "Verdict" (rationale first). The probabilities of the options' spellings there (``A``,
    ``" A"``) are summed and normalised over the options (Lee et al. 2023, §2.1.1):

        p(A) = P(A) / (P(A) + P(B))

    An option absent from ``top_logprobs`` gets the largest mass it could have had: the least
    listed probability, or what the listed ones leave over if that is smaller.
    """
    texts = [t.get("token", "") for t in tokens]
    candidates = [i for i, t in enumerate(texts) if normalise_token(t) in labels]
    if not candidates:
        return None
    index = candidates[0]
    if rationale_first:
        joined, starts = "", []
        for t in texts:
            starts.append(len(joined))
            joined += t
        last = joined.lower().rfind("verdict")
        after = [i for i in candidates if starts[i] >= last] if last >= 0 else []
        index = after[0] if after else candidates[-1]
    at = tokens[index]
    listed = {e["token"]: e["logprob"] for e in (at.get("top_logprobs") or []) if "token" in e}
    listed.setdefault(at["token"], at.get("logprob", 0.0))
    probs = {tok: math.exp(lp) for tok, lp in listed.items() if lp is not None}
    mass = {x: sum(p for tok, p in probs.items() if normalise_token(tok) == x) for x in labels}
    missing = [x for x in labels if mass[x] == 0.0]
    if missing:
        bound = min(min(probs.values()), max(0.0, 1.0 - sum(probs.values())))
        for x in missing:
            mass[x] = bound
    total = mass[labels[0]] + mass[labels[1]]
    p_first = 0.5 if total == 0 else mass[labels[0]] / total
    return p_first, {"token": at["token"], "position": index,
                     "logprobs": {x: (math.log(mass[x]) if mass[x] > 0 else None) for x in labels},
                     "bounded": missing}
