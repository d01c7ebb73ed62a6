"""``openai:URL#MODEL``: a judge behind any OpenAI-compatible chat-completions endpoint.

Each comparison is one ``POST {URL}/chat/completions`` at temperature 0 asking for
``logprobs``/``top_logprobs``; the verdict's probability comes from the verdict token's
top log-probabilities (``prompt.verdict_from_logprobs``). A server that returns no log-probs
(or refuses the option) gets its answer text parsed and the verdict marked hard.

Requests run on a bounded thread pool (``concurrency``) through ``openai_client.ChatClient``
(shared with ``openai:`` generation). 408/429/5xx, timeouts and dropped
connections are retried with exponential backoff (honouring ``Retry-After``); everything else
fails that comparison only. The API key is read from the environment variable the caller
names, sent as a bearer token, and redacted (``redact.py``) from every error message and
every reply before anything is stored.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from .base import Judge, JudgeConfigError, JudgeError, JudgeSpec, Verdict
from .openai_client import ChatClient, KeyNotSet, RequestFailed
from .prompt import Comparison, judge_messages, parse_verdict_text, verdict_from_logprobs


class OpenAIJudge(Judge):
    def __init__(self, spec: JudgeSpec, *, labels: tuple[str, str] = ("A", "B"),
                 rationale_first: bool = False, api_key_env: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 30.0, top_logprobs: int = 20,
                 rationale_tokens: int = 256, max_context_chars: int = 6000,
                 max_response_chars: int = 3000):
        self.name = spec.public
        self.model = spec.model
        self.labels = labels
        self.rationale_first = rationale_first
        self.top_logprobs = top_logprobs
        self.max_tokens = rationale_tokens + 16 if rationale_first else 8
        self.max_context_chars, self.max_response_chars = max_context_chars, max_response_chars
        try:
            self._client = ChatClient(spec.target, api_key_env=api_key_env, concurrency=concurrency,
                                      timeout=timeout, max_retries=max_retries, backoff=backoff,
                                      max_backoff=max_backoff)
        except KeyNotSet as err:
            raise JudgeConfigError(str(err)) from None
        self.url = self._client.url
        self.secrets = self._client.secrets
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
        while True:
            try:
                return self._client.complete(body)
            except RequestFailed as err:
                if err.status == 400 and "logprobs" in body and "logprob" in err.text.lower():
                    with self._lock:  # the server does not do log-probs: ask for text only
                        self._logprobs = False
                    body.pop("logprobs"), body.pop("top_logprobs")
                    continue
                raise JudgeError(err.kind, err.message) from None

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


def _rationale(text: str) -> str:
    """The explanation before the final verdict line."""
    cut = text.lower().rfind("verdict")
    return (text[:cut] if cut >= 0 else text).strip()
