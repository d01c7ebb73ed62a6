"""The one interface every judge back end implements, and judge specs.

    openai:URL#MODEL   an OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, hosted)
    local:SPEC         a causal LM loaded with transformers (the caller loads it and passes it in)
    rm:DIR             a trained reward model (the caller passes its scoring function in)

A judge takes a batch of ``Comparison``s and returns, for each, a ``Verdict`` (p that the
response shown first is better) or a ``JudgeError`` saying why that comparison failed; one
failed comparison never sinks the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from .prompt import Comparison
from .redact import redact

KINDS = ("openai", "local", "rm")


class JudgeConfigError(ValueError):
    """A judge spec or setting that cannot work (bad spec, missing key variable...)."""


class JudgeError(Exception):
    """One comparison the judge could not decide: ``kind`` is http, timeout, connection,
    malformed (unreadable reply) or no_verdict (the answer names no option)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


@dataclass
class Verdict:
    p_first: float                 # p(the response shown first, as A, is better)
    hard: bool = False             # True: parsed from text, no probabilities (p is 0 or 1)
    text: str = ""                 # the judge's raw answer (for the record)
    rationale: str | None = None   # its explanation, when asked to reason first
    info: dict = field(default_factory=dict)  # back-end details (logprobs of the options...)


class Judge:
    """Base class: ``name`` is the spec without secrets; ``judge`` answers a batch."""
    name: str = "judge"
    position_invariant = False     # True when A/B order cannot matter (a reward model)
    secrets: tuple[str, ...] = ()  # what must never be stored (an API key): see redact.py

    def judge(self, comparisons: list[Comparison]) -> list[Verdict | JudgeError]:
        raise NotImplementedError

    def redact(self, value):
        """``value`` (text, or dicts and lists of it) with secrets and credentials redacted."""
        return redact(value, self.secrets)

    def redacted(self, result: Verdict | BaseException) -> Verdict | JudgeError:
        """One result as it may be stored: its texts redacted; any error a ``JudgeError``."""
        if isinstance(result, Verdict):
            return replace(result, text=self.redact(result.text),
                           rationale=self.redact(result.rationale), info=self.redact(result.info))
        if isinstance(result, JudgeError):
            return JudgeError(result.kind, self.redact(result.message))
        return JudgeError("error", self.redact(f"{type(result).__name__}: {result}"))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class JudgeSpec:
    kind: str        # openai | local | rm
    target: str      # URL, model spec, or reward-model folder
    model: str = ""  # the served model's name (openai only)

    @property
    def public(self) -> str:
        """The spec with any credentials in the URL removed: safe to store and show."""
        if self.kind == "openai":
            return f"openai:{public_url(self.target)}#{self.model}"
        return f"{self.kind}:{self.target}"


def parse_judge_spec(spec: str, option: str = "--judge") -> JudgeSpec:
    """``option`` names the command-line option in messages (``--model`` for generation)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise JudgeConfigError(f"{option}: {spec!r} is not openai:URL#MODEL, local:SPEC or rm:DIR")
    kind, rest = spec.split(":", 1)
    if kind not in KINDS:
        raise JudgeConfigError(f"{option}: unknown judge kind {kind!r} (openai, local or rm)")
    if not rest:
        raise JudgeConfigError(f"{option}: {kind}: needs a target after the colon")
    if kind != "openai":
        return JudgeSpec(kind, rest)
    url, sep, model = rest.rpartition("#")
    if not sep or not url or not model:
        raise JudgeConfigError(f"{option}: openai: expected openai:URL#MODEL, e.g. "
                             "openai:http://127.0.0.1:8000/v1#qwen2.5-7b-instruct")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JudgeConfigError(f"{option}: openai: {public_url(url)!r} is not an http(s) URL")
    return JudgeSpec("openai", url, model)


def public_url(url: str) -> str:
    """Drop user:password@ and the query string (where keys sometimes travel)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
