"""``openai:URL#MODEL``: a judge behind any OpenAI-compatible chat-completions endpoint.

Each comparison is one ``POST {URL}/chat/completions`` at temperature 0 asking for
``logprobs``/``top_logprobs``; the verdict's probability comes from the verdict token's
top log-probabilities (``prompt.verdict_from_logprobs``). A server that returns no log-probs
(or refuses the option) gets its answer text parsed and the verdict marked hard.

Requests run on a bounded thread pool (``concurrency``). 408/429/5xx, timeouts and dropped
connections are retried with exponential backoff (honouring ``Retry-After``); everything else
fails that comparison only. The API key is read from the environment variable the caller
names, sent as a bearer token, and redacted (``redact.py``) from every error message and
every reply before anything is stored.
"""
from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from urllib.parse import parse_qsl, urlsplit

import httpx

from .base import Judge, JudgeConfigError, JudgeError, JudgeSpec, Verdict
from .prompt import Comparison, judge_messages, parse_verdict_text, verdict_from_logprobs

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAIJudge(Judge):
    def __init__(self, spec: JudgeSpec, *, labels: tuple[str, str] = ("A", "B"),
                 rationale_first: bool = False, api_key_env: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 30.0, top_logprobs: int = 20,
                 rationale_tokens: int = 256, max_context_chars: int = 6000,
                 max_response_chars: int = 3000):
        self.name = spec.public
        self.model = spec.model
        self.url = spec.target.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.labels = labels
        self.rationale_first = rationale_first
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.top_logprobs = top_logprobs
        self.max_tokens = rationale_tokens + 16 if rationale_first else 8
        self.max_context_chars, self.max_response_chars = max_context_chars, max_response_chars
        self._key = None
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            self._key = os.environ.get(api_key_env)
            if not self._key:
                raise JudgeConfigError(f"--api-key-env: the environment variable {api_key_env} "
                                       "is not set")
            headers["Authorization"] = f"Bearer {self._key}"
        # a password or key in the URL itself (user:pass@, ?api-key=) is as secret as the key
        self.secrets = tuple(s for s in [self._key, *_url_secrets(self.url)] if s)
        self._client = httpx.Client(headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge")
        self._logprobs = True          # turned off once if the server refuses the option
        self._lock = threading.Lock()

    def judge(self, comparisons: list[Comparison]) -> list[Verdict | JudgeError]:
        return list(self._pool.map(self._one, comparisons))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    # -- one comparison ----------------------------------------------------------------------
    def _one(self, c: Comparison) -> Verdict | JudgeError:
        try:
            return self.redacted(self._verdict(self._complete(judge_messages(
                c, self.labels, self.rationale_first, self.max_context_chars,
                self.max_response_chars))))
        except Exception as err:  # never let one comparison take the batch down
            return self.redacted(err)

    def _complete(self, messages: list[dict]) -> dict:
        body = {"model": self.model, "messages": messages, "temperature": 0,
                "max_tokens": self.max_tokens}
        if self._logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        attempt = 0
        while True:
            try:
                r = self._client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                failure = JudgeError("timeout", f"no answer from the server ({type(err).__name__})")
                wait = None
            except httpx.TransportError as err:
                failure = JudgeError("connection", f"cannot reach the server ({type(err).__name__}: {err})")
                wait = None
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise JudgeError("malformed", f"the reply is not JSON: {self._snippet(r)}") from None
                if r.status_code == 400 and "logprobs" in body and "logprob" in r.text.lower():
                    with self._lock:  # the server does not do log-probs: ask for text only
                        self._logprobs = False
                    body.pop("logprobs"), body.pop("top_logprobs")
                    continue
                failure = JudgeError("http", f"HTTP {r.status_code}: {self._snippet(r)}")
                if r.status_code not in RETRY_STATUS:
                    raise failure
                wait = _retry_after(r)
            if attempt >= self.max_retries:
                raise JudgeError(failure.kind, f"{failure.message} (after {attempt + 1} attempts)")
            # Exponential backoff with jitter so concurrent workers do not retry in step.
            delay = self.backoff * 2 ** attempt * (1 + 0.25 * random.random())
            time.sleep(min(self.max_backoff, wait if wait is not None else delay))
            attempt += 1

    def _verdict(self, reply: dict) -> Verdict:
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JudgeError("malformed", "the reply has no choices[0].message.content") from None
        rationale = _rationale(text) if self.rationale_first else None
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        if tokens:
            found = verdict_from_logprobs(tokens, self.labels, self.rationale_first)
            if found is not None:
                p_first, info = found
                return Verdict(p_first, hard=False, text=text, rationale=rationale, info=info)
        named = parse_verdict_text(text, self.labels, self.rationale_first)
        if named is None:
            raise JudgeError("no_verdict", f"the answer names neither {self.labels[0]} nor "
                                           f"{self.labels[1]}: {text[:120]!r}")
        return Verdict(1.0 if named == self.labels[0] else 0.0, hard=True, text=text,
                       rationale=rationale, info={"parsed": named})

    def _snippet(self, r: httpx.Response) -> str:
        """The start of a reply body for an error message: redacted first, then cut, so a
        cut can never leave part of the key behind."""
        return repr(self.redact(r.text)[:200])


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    return [parts.password or ""] + [value for name, value in parse_qsl(parts.query)
                                     if re.search(r"(?i)key|token|secret|sig|pass", name)]


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return max(0.0, float(r.headers.get("retry-after", "")))
    except ValueError:
        return None


def _rationale(text: str) -> str:
    """The explanation before the final verdict line."""
    cut = text.lower().rfind("verdict")
    return (text[:cut] if cut >= 0 else text).strip()
