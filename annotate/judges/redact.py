"""Keep secrets out of everything a judge run stores: labels, run logs, error messages.

A judge's API key travels in every request, so it can come back in anything the server or the
HTTP stack says: a careless proxy's error page, a model that repeats its prompt or headers, an
exception that quotes a header it refused. ``redact(value, secrets)`` replaces, in every string
of ``value`` (dicts and lists are walked, keys too):

- each known secret, also in the escaped forms a JSON body, a ``repr`` or a URL shows it in;
- anything that looks like a credential whoever it belongs to: an ``Authorization:`` header's
  value, a ``Bearer <token>``, and OpenAI (``sk-...``) or Hugging Face (``hf_...``) keys;

by ``[redacted]``. Secrets shorter than ``MIN_SECRET`` characters are not searched for (a
one-letter "key" would shred every text and protects nothing).
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable
from urllib.parse import quote

REDACTED = "[redacted]"
MIN_SECRET = 4

# A token after "Bearer" counts only if it looks like one (8+ characters with a digit or one of
# -._~+/=), so prose such as "the bearer of bad news" keeps its words.
_TOKEN = r"(?=[A-Za-z0-9\-._~+/]*[0-9\-._~+/])[A-Za-z0-9\-._~+/]{8,}=*"
_PATTERNS = [
    # Authorization: Bearer x / "authorization": "Basic x" / authorization=x -> the value goes
    (re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?"
                r"[^\s\"',;&}\]]+"),
     lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + REDACTED),
    (re.compile(r"(?i)\b(bearer)\s+" + _TOKEN), lambda m: m.group(1) + " " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), lambda m: REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), lambda m: REDACTED),
]


def variants(secret: str) -> set[str]:
    """The secret as text may show it: raw, stripped, JSON- and repr-escaped, URL-quoted."""
    forms = {secret, secret.strip(), json.dumps(secret)[1:-1], repr(secret)[1:-1],
             quote(secret, safe="")}
    return {f for f in forms if len(f) >= MIN_SECRET}


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    forms = set().union(*(variants(s) for s in secrets if s)) if secrets else set()
    for form in sorted(forms, key=len, reverse=True):   # longest first: no piece left behind
        text = text.replace(form, REDACTED)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` with every string in it redacted (non-strings are returned as they are)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    return value
