"""The one HTTP client for OpenAI-compatible chat-completions servers (vLLM, TGI, llama.cpp's
server, Ollama, hosted APIs), shared by the ``openai:`` judge and ``openai:`` generation.

``ChatClient.complete(body)`` is one ``POST {URL}/chat/completions`` with retries: 408/429/5xx,
timeouts and dropped connections are retried with exponential backoff and jitter (honouring
``Retry-After``), at most ``max_retries`` times; any other status fails at once. Failures raise
``RequestFailed(kind, message, status, text)`` whose texts are already redacted. The API key
is read from the environment variable the caller names, sent as a bearer token, and listed in
``secrets`` (with any password or key in the URL) so callers redact it (``redact.py``) from
everything they store.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from urllib.parse import parse_qsl, urlsplit

import httpx

from .redact import redact

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class KeyNotSet(ValueError):
    """``--api-key-env NAME`` names a variable that is not set."""


class RequestFailed(Exception):
    """A request that failed for good: ``kind`` is http, timeout, connection or malformed;
    ``status`` the HTTP status (None without one); ``text`` the start of the reply body."""

    def __init__(self, kind: str, message: str, status: int | None = None, text: str = ""):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.status, self.text = kind, message, status, text


class ChatClient:
    def __init__(self, url: str, *, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 0.5,
                 max_backoff: float = 30.0):
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.attempts = 0                        # requests sent, retries included
        key = None
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise KeyNotSet(f"--api-key-env: the environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        # a password or key in the URL itself (user:pass@, ?api-key=) is as secret as the key
        self.secrets = tuple(s for s in [key, *url_secrets(self.url)] if s)
        # the callers bound their own concurrency; the pool only needs room for it
        self._client = httpx.Client(headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_connections=max(1, concurrency)))

    def redact(self, value):
        return redact(value, self.secrets)

    def complete(self, body: dict) -> dict:
        """The server's JSON answer to ``body``; RequestFailed after the last retry."""
        attempt = 0
        while True:
            self.attempts += 1
            try:
                r = self._client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                failure = RequestFailed("timeout", f"no answer from the server ({type(err).__name__})")
                wait = None
            except httpx.TransportError as err:
                failure = RequestFailed("connection", self.redact(
                    f"cannot reach the server ({type(err).__name__}: {err})"))
                wait = None
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise RequestFailed("malformed", f"the reply is not JSON: {self.snippet(r)}",
                                            200, self.snippet(r)) from None
                failure = RequestFailed("http", f"HTTP {r.status_code}: {self.snippet(r)}",
                                        r.status_code, self.redact(r.text[:2000]))
                if r.status_code not in RETRY_STATUS:
                    raise failure
                wait = retry_after(r)
            if attempt >= self.max_retries:
                raise RequestFailed(failure.kind, f"{failure.message} (after {attempt + 1} attempts)",
                                    failure.status, failure.text)
            # Exponential backoff with jitter so concurrent workers do not retry in step.
            delay = self.backoff * 2 ** attempt * (1 + 0.25 * random.random())
            time.sleep(min(self.max_backoff, wait if wait is not None else delay))
            attempt += 1

    def snippet(self, r: httpx.Response) -> str:
        """The start of a reply body for an error message: redacted first, then cut, so a
        cut can never leave part of the key behind."""
        return repr(self.redact(r.text)[:200])

    def close(self) -> None:
        self._client.close()


def url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    return [parts.password or ""] + [value for name, value in parse_qsl(parts.query)
                                     if re.search(r"(?i)key|token|secret|sig|pass", name)]


def retry_after(r: httpx.Response) -> float | None:
    try:
        return max(0.0, float(r.headers.get("retry-after", "")))
    except ValueError:
        return None
