"""Candidates from a model behind an OpenAI-compatible server: ``--model openai:URL#MODEL``.

The HTTP side (retries with backoff on 408/429/5xx, timeouts and dropped connections; the key
from an environment variable; redaction) is ``annotate.judges.openai_client.ChatClient``, the
same client the ``openai:`` judge uses. This module adds what generation needs:

- **Requests.** A prompt's missing candidates are grouped by temperature (candidate j uses the
  (j mod n)-th temperature, as in-process); each group is one request asking ``n`` choices. A
  server that answers fewer choices than asked, or refuses ``n`` (400/422), is asked one
  sample per request from then on (remembered for the run). Candidate j is sampled with
  ``seed + j`` (a request for n choices with the seed of its first candidate).
- **Concurrency.** At most ``concurrency`` requests are in flight (a thread pool of that size).
- **Failures.** The first request that still fails after its retries stops the run: what is in
  flight finishes, nothing new is sent, every complete prompt and every answer already received
  is handed to the caller, and ``GenerationFailed`` says, in one line, which prompt and what the
  server answered.
- **Provenance.** ``gen_params`` of every answer: temperature, top_p, max_new_tokens (sent as
  ``max_tokens``), seed, n (choices asked in its request), served_model (the server's model
  name), finished (false when the server says ``finish_reason: length``).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from annotate.judges.base import parse_judge_spec
from annotate.judges.openai_client import ChatClient, RequestFailed

PREFIX = "openai:"


def is_served(model: str | None) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def public_spec(model: str) -> str:
    """The spec as stored and shown: credentials in the URL (user:pass@, ?key=) left out."""
    return parse_judge_spec(model, option="--model").public


@dataclass
class ServerSettings:
    api_key_env: str | None = None     # the NAME of the variable holding the key (never the key)
    concurrency: int = 4               # requests in flight at most
    timeout: float = 300.0             # seconds per request (a long answer on a busy server)
    max_retries: int = 4               # retries of one request on 408/429/5xx/timeouts
    backoff: float = 0.5               # first retry's delay in seconds, doubled each time

    def check(self) -> "ServerSettings":
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"--concurrency must be between 1 and 256, not {self.concurrency}")
        if not 0 <= self.max_retries <= 20:
            raise ValueError(f"--max-retries must be between 0 and 20, not {self.max_retries}")
        if self.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api-key-env: the environment variable {self.api_key_env} is not set")
        return self


class GenerationFailed(RuntimeError):
    """A request failed for good; the message is one line, already redacted."""


@dataclass
class Wanted:
    """One prompt's missing candidates: indices first .. first + count - 1."""
    messages: list[dict]
    first: int
    count: int


class ServedModel:
    def __init__(self, spec: str, settings: ServerSettings):
        parsed = parse_judge_spec(spec, option="--model")   # a ValueError with one clear line
        self.name = parsed.public
        self.served_model = parsed.model
        self.settings = settings.check()
        self.client = ChatClient(parsed.target, api_key_env=settings.api_key_env,
                                 concurrency=settings.concurrency, timeout=settings.timeout,
                                 max_retries=settings.max_retries, backoff=settings.backoff)
        self.use_n = True             # until the server shows it does not do n > 1
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def ask(self, messages: list[dict], count: int, *, temperature: float, top_p: float,
            max_new_tokens: int, seed: int | None) -> list[dict]:
        """``count`` answers: ``[{"text", "finished", "tokens", "gen_params"}]``."""
        out: list[dict] = []
        if count > 1 and self.use_n:
            try:
                out = self._request(messages, count, temperature, top_p, max_new_tokens, seed)[:count]
            except RequestFailed as err:
                if err.status not in (400, 422):
                    raise
            if len(out) < count:
                with self._lock:
                    self.use_n = False
        while len(out) < count:       # one sample per request
            j = len(out)
            out += self._request(messages, 1, temperature, top_p, max_new_tokens,
                                 None if seed is None else seed + j)[:1]
        return out

    def _request(self, messages, n, temperature, top_p, max_new_tokens, seed) -> list[dict]:
        body = {"model": self.served_model, "messages": messages, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_new_tokens}
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        reply = self.client.complete(body)
        try:
            choices = [(c["message"]["content"] or "", c.get("finish_reason"))
                       for c in reply["choices"]]
        except (KeyError, TypeError):
            raise RequestFailed("malformed", "the reply has no choices[].message.content",
                                200) from None
        if not choices:
            raise RequestFailed("malformed", "the reply has no choices", 200)
        usage = (reply.get("usage") or {}).get("completion_tokens") if isinstance(reply, dict) else None
        tokens = usage // len(choices) if isinstance(usage, int) else 0
        params = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                  "seed": seed, "n": n, "served_model": self.served_model}
        return [{"text": self.client.redact(text), "finished": reason != "length", "tokens": tokens,
                 "gen_params": {**params, "finished": reason != "length"}}
                for text, reason in choices]


def generate_served(model: ServedModel, wanted: list[Wanted], temperatures: list[float], *,
                    top_p: float, max_new_tokens: int, seed: int | None,
                    on_prompt: Callable[[int, list[dict], bool], None],
                    progress=None) -> None:
    """Ask the server for every wanted candidate, ``settings.concurrency`` requests at a time.

    ``on_prompt(i, candidates, complete)`` is called (in this thread) once per prompt of
    ``wanted``: when all its candidates are in (``complete``), or, after a failure, with the
    ones received so far. Raises GenerationFailed after the first request that failed for good.
    """
    units = []   # (prompt index, candidate indices of one temperature)
    for i, want in enumerate(wanted):
        by_temperature: dict[int, list[int]] = {}
        for j in range(want.first, want.first + want.count):
            by_temperature.setdefault(j % len(temperatures), []).append(j)
        units += [(i, js) for js in by_temperature.values()]
    left = {i: 0 for i in range(len(wanted))}
    for i, _ in units:
        left[i] += 1
    got: dict[int, list[tuple[int, dict]]] = {i: [] for i in range(len(wanted))}

    stopping = threading.Event()   # set by the worker whose request failed for good

    def run(unit):
        i, js = unit
        if stopping.is_set():
            return None            # nothing new is sent after a final failure
        try:
            answers = model.ask(wanted[i].messages, len(js),
                                temperature=temperatures[js[0] % len(temperatures)],
                                top_p=top_p, max_new_tokens=max_new_tokens,
                                seed=None if seed is None else seed + js[0])
        except RequestFailed:
            stopping.set()
            raise
        return list(zip(js, answers))

    failure: tuple[int, RequestFailed] | None = None
    pool = ThreadPoolExecutor(max_workers=model.settings.concurrency, thread_name_prefix="generate")
    try:
        pending = {pool.submit(run, unit): unit for unit in units}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i, js = pending.pop(future)
                try:
                    result = future.result()
                except RequestFailed as err:
                    if failure is None:      # stop sending; let what is in flight finish
                        failure = (i, err)
                        for other in pending:
                            other.cancel()
                    continue
                if result is None:
                    continue
                got[i] += result
                if progress is not None:
                    progress.update(len(js))
                left[i] -= 1
                if left[i] == 0:
                    on_prompt(i, [a for _, a in sorted(got[i], key=lambda x: x[0])], True)
            pending = {f: u for f, u in pending.items() if not f.cancelled()}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        for i, answers in got.items():
            if answers and left[i] > 0:
                on_prompt(i, [a for _, a in sorted(answers, key=lambda x: x[0])], False)
        i, err = failure
        raise GenerationFailed(f"prompt {i + 1} of {len(wanted)} ({preview(wanted[i].messages)}): "
                               f"{err.message}")


def preview(messages: list[dict], limit: int = 60) -> str:
    text = " ".join(str(messages[-1].get("content", "")).split()) if messages else ""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")
