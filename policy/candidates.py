"""The generation job: K candidate responses per prompt, ready to be labelled.

``generate_candidates(config, prompts, run_dir)`` never touches the database. It writes its run
folder with ``RunLog``: ``responses.jsonl`` holds one record per response
(``{"prompt", "text", "model", "adapter", "gen_params"}``), and the responses of one task share
a ``group`` (and carry its ``round``), which ``store.ingest_run_dir`` turns into a task once
the run has finished. It also returns the candidates as lines of the ``responses`` import
format (``annotate.formats``), which ``prefstudio generate --out`` writes:

    {"prompt": [...], "responses": [{"text", "model", "adapter", "gen_params"}, ...],
     "task": "ranking" | "pairwise" | "none", "round": 0}

A line's task covers all of its responses, so a pairwise task on two of K candidates takes two
lines: the pair (``"pairwise"``) and the other candidates (``"none"``). Candidates with the
same text (likely at low temperature) are kept once: a task never shows one answer twice.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from annotate.runlog import RunLog, read_run
from annotate.store import prompt_id
from harness.hub import DEFAULT_POLICY

from .served import ServerSettings, is_served

# torch, transformers and the sampling code are imported where they are used, so a bad option
# or a bad prompts file is refused in a moment instead of after seconds of imports
TASK_KINDS = ("auto", "ranking", "pairwise", "mixed", "none")
DTYPES = ("float32", "bfloat16")
CHUNK_BATCHES = 8  # record to the run folder every this many batches, so a crash keeps most work


@dataclass
class GenerateConfig:
    model: str = DEFAULT_POLICY
    adapter: str | None = None
    k: int = 4                                   # candidates per prompt
    temperatures: list[float] = field(default_factory=lambda: [0.3, 0.7, 1.0, 1.2])  # cycled
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int | None = 0
    batch_size: int = 16
    task: str = "auto"   # auto (ranking of all, none for k=1) | ranking | pairwise | mixed (alternate) | none
    round: int = 0
    dtype: str = "float32"
    server: ServerSettings = field(default_factory=ServerSettings)   # openai:URL#MODEL only

    def check(self) -> "GenerateConfig":
        """Raise ValueError with one clear sentence on a bad setting."""
        if not 1 <= self.k <= 9:
            raise ValueError(f"--k must be between 1 and 9 (a task compares at most 9), not {self.k}")
        if self.task not in TASK_KINDS:
            raise ValueError(f"--task must be one of {', '.join(TASK_KINDS)}, not {self.task!r}")
        if self.task == "auto":
            self.task = "ranking" if self.k >= 2 else "none"
        if self.task != "none" and self.k < 2:
            raise ValueError("a task needs at least 2 candidates: use --k 2 or more, or --task none")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError("--temperature must be one or more numbers >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("--max-new-tokens and --batch-size must be positive")
        if self.round < 0:
            raise ValueError("--round must be >= 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}")
        if is_served(self.model):
            from .served import public_spec
            public_spec(self.model)      # a malformed spec is refused here, in one line
            self.server.check()
            if self.adapter:
                raise ValueError("--adapter applies to local models; a served model is "
                                 "whatever the server serves under its name")
        return self

    def sampling(self, seed: int | None) -> list:
        """One SamplingParams per temperature; candidate j uses entry j mod len."""
        from .generate import SamplingParams
        return [SamplingParams(max_new_tokens=self.max_new_tokens, temperature=t, top_p=self.top_p,
                               seed=seed) for t in self.temperatures]


def model_identity(model: str, adapter: str | None = None) -> tuple[str, str | None]:
    """(model, adapter) as recorded on each response: a policy run folder becomes its base
    spec and adapter folder; folders are made absolute so they mean the same from anywhere; a
    served model is its spec without credentials."""
    if is_served(model):
        from .served import public_spec
        return public_spec(model), None
    from .lm import policy_source
    base, run_adapter = policy_source(model)
    adapter = adapter or run_adapter
    if adapter and (Path(adapter) / "policy.json").exists():
        adapter = policy_source(adapter)[1]

    def absolute(spec):
        return str(Path(spec).resolve()) if spec and Path(spec).is_dir() else spec
    return absolute(base), absolute(adapter)


def task_of(kind: str, n: int) -> tuple[str, list[int]]:
    """The task over n distinct candidates: (kind, indices shown). A ranking shows them all; a
    pairwise task the first and the last (with cycled temperatures the coolest and the
    hottest sample); two candidates make a pairwise task whatever was asked."""
    if n < 2 or kind == "none":
        return "none", []
    if kind == "pairwise" or n == 2:
        return "pairwise", [0, n - 1]
    return "ranking", list(range(n))


def _parents(config: GenerateConfig) -> list[str]:
    """Run ids of the policy runs the model or adapter come from (lineage)."""
    ids = []
    for spec in (config.model, config.adapter) if not is_served(config.model) else ():
        for folder in (Path(spec), Path(spec).parent) if spec else ():
            if (folder / "run.json").exists():
                ids.append(read_run(folder)["id"])
                break
    return list(dict.fromkeys(ids))


def generate_candidates(config: GenerateConfig, prompts: list[list[dict]],
                        run_dir: str | Path | None, *, run_id: str | None = None, model=None,
                        tok=None, progress: bool = True, existing: list[list[dict]] | None = None,
                        on_lines=None) -> tuple[list[dict], dict]:
    """Answer each prompt (chat messages) K times; returns (lines, summary). See the module
    docstring for both outputs.

    ``run_dir=None`` writes no run folder (``prefstudio generate --out``); ``run_id`` names
    the run (default: a new id, or the one already in the folder's run.json). A loaded
    ``model``/``tok`` may be passed in (tests, benchmarks); otherwise they are loaded here.

    A served model (``openai:URL#MODEL``, ``policy.served``) also takes ``existing``: per
    prompt, the response items it already has from this model (only the missing candidates
    are asked; a task covers old and new), and ``on_lines(lines)``, called as each prompt's
    lines are ready (``--out`` appends them, so a killed run keeps what it got).
    """
    config.check()
    stored = asdict(config)
    if is_served(config.model):
        stored["model"] = model_identity(config.model)[0]   # no credentials in run.json
    # RunLog with is_main=False writes nothing: the same code path with or without a folder
    log = RunLog(run_dir or ".", "generate", stored, parents=_parents(config),
                 run_id=run_id, is_main=run_dir is not None)
    try:
        if is_served(config.model):
            return _generate_served(config, prompts, existing or [[] for _ in prompts], log,
                                    progress, on_lines)
        if model is None:
            import torch
            from .lm import load_policy
            model, tok = load_policy(config.model, config.adapter,
                                     dtype=getattr(torch, config.dtype))
        return _generate(config, prompts, model, tok, log, progress)
    except BaseException as err:
        log.fail(err)
        raise


def _generate(config, prompts, model, tok, log: RunLog, progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm
    from .generate import generate

    model_name, adapter = model_identity(config.model, config.adapter)
    chunk = config.batch_size * CHUNK_BATCHES
    bar = tqdm(total=len(prompts) * config.k, desc="generate", unit="resp",
               disable=not progress or len(prompts) * config.k < 8)
    lines: list[dict] = []
    counts = {"prompts": 0, "responses": 0, "dropped": 0, "ranking_tasks": 0, "pairwise_tasks": 0,
              "tokens": 0}
    started = time.perf_counter()
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        # a different random stream per chunk, reproducible as a whole
        sampling = config.sampling(None if config.seed is None else config.seed + start)
        results = generate(model, tok, part, sampling, k=config.k, batch_size=config.batch_size,
                           progress=bar)
        records = []
        for offset, (messages, candidates) in enumerate(zip(part, results)):
            responses = _distinct(candidates, sampling, model_name, adapter)
            asked = config.task if config.task != "mixed" else ("ranking", "pairwise")[(start + offset) % 2]
            kind, shown = task_of(asked, len(responses))
            lines += _lines(messages, responses, kind, shown, config.round)
            records += _records(messages, responses, shown, config.round)
            counts["prompts"] += 1
            counts["responses"] += len(responses)
            counts["dropped"] += config.k - len(responses)
            counts["tokens"] += sum(c["tokens"] for c in candidates)
            if kind != "none":
                counts[f"{kind}_tasks"] += 1
        log.record("responses", records)
        seconds = time.perf_counter() - started
        log.metric(counts["prompts"], responses=counts["responses"], tokens=counts["tokens"],
                   tokens_per_s=counts["tokens"] / max(seconds, 1e-9))
    bar.close()
    return lines, _finish(log, counts, started)


def _generate_served(config, prompts, existing, log: RunLog, progress: bool,
                     on_lines) -> tuple[list[dict], dict]:
    """``policy.served``: ask the server for each prompt's missing candidates and record each
    prompt as soon as it is complete (a failed run records the answers it received)."""
    from tqdm.auto import tqdm
    from .served import ServedModel, Wanted, generate_served

    served = ServedModel(config.model, config.server)
    wanted = [Wanted(messages, len(have), config.k - len(have))
              for messages, have in zip(prompts, existing)]
    bar = tqdm(total=sum(w.count for w in wanted), desc="generate", unit="resp",
               disable=not progress or sum(w.count for w in wanted) < 8)
    lines: list[dict] = []
    counts = {"prompts": 0, "responses": 0, "dropped": 0, "ranking_tasks": 0, "pairwise_tasks": 0,
              "tokens": 0, "requests": 0}
    started = time.perf_counter()

    def take(i: int, candidates: list[dict], complete: bool) -> None:
        messages, have = prompts[i], existing[i]
        new = distinct_items([{"text": c["text"], "model": served.name, "adapter": None,
                               "gen_params": c["gen_params"]} for c in candidates],
                             {item["text"] for item in have})
        if complete:   # the task covers the answers the prompt had and the new ones
            responses = distinct_items(have) + new
            asked = config.task if config.task != "mixed" else ("ranking", "pairwise")[i % 2]
            kind, shown = task_of(asked, len(responses))
            offset = len(responses) - len(new)
            records = [r for n, r in enumerate(_records(messages, responses, shown, config.round))
                       if n >= offset or n in shown]
            mine = _lines(messages, responses, kind, shown, config.round)
            counts["prompts"] += 1
            if kind != "none":
                counts[f"{kind}_tasks"] += 1
        else:          # cut short by a failure: keep the answers, no task
            records = _records(messages, new, [], config.round)
            mine = _lines(messages, new, "none", [], config.round) if new else []
        log.record("responses", records)
        lines.extend(mine)
        if on_lines is not None and mine:
            on_lines(mine)
        counts["responses"] += len(new)
        counts["dropped"] += len(candidates) - len(new)
        counts["tokens"] += sum(c["tokens"] for c in candidates)
        log.metric(counts["prompts"], responses=counts["responses"], tokens=counts["tokens"])

    try:
        generate_served(served, wanted, config.temperatures, top_p=config.top_p,
                        max_new_tokens=config.max_new_tokens, seed=config.seed, on_prompt=take,
                        progress=bar)
    finally:
        bar.close()
        served.close()
        counts["requests"] = served.client.attempts
    return lines, _finish(log, counts, started)


def _finish(log: RunLog, counts: dict, started: float) -> dict:
    """The run's summary, recorded as its end."""
    seconds = time.perf_counter() - started
    summary = {**counts, "seconds": round(seconds, 2),
               "tokens_per_s": round(counts["tokens"] / max(seconds, 1e-9), 1)}
    log.log(f"generated {summary}")
    log.finish("done", **summary)
    return summary


def _distinct(candidates: list[dict], sampling: list, model: str, adapter: str | None) -> list[dict]:
    """The candidates as response items, in candidate order, empty texts and repeats left out."""
    items = []
    for cand in candidates:
        params = sampling[cand["params"]]
        items.append({"text": cand["text"], "model": model, "adapter": adapter,
                      "gen_params": {"temperature": params.temperature, "top_p": params.top_p,
                                     "max_new_tokens": params.max_new_tokens, "seed": params.seed,
                                     "finished": cand["finished"]}})
    return distinct_items(items)


def distinct_items(items: list[dict], seen: set[str] | None = None) -> list[dict]:
    """``items`` without empty texts, repeats, or texts in ``seen`` (which it extends)."""
    out, seen = [], set() if seen is None else seen
    for item in items:
        if not item["text"] or item["text"] in seen:
            continue
        seen.add(item["text"])
        out.append(item)
    return out


def _lines(messages, responses, kind, shown, round) -> list[dict]:
    """``responses``-format lines of one prompt: the task's responses, then any others."""
    rest = [r for i, r in enumerate(responses) if i not in shown]
    lines = []
    if shown:
        lines.append({"prompt": messages, "responses": [responses[i] for i in shown],
                      "task": kind, "round": round})
    if rest:
        lines.append({"prompt": messages, "responses": rest, "task": "none", "round": round})
    return lines


def _records(messages, responses, shown, round) -> list[dict]:
    """Run-folder records, one per response; the task's responses share a group."""
    group = prompt_id(messages)
    out = []
    for i, response in enumerate(responses):
        record = {"prompt": messages, **response}
        if i in shown:
            record.update(group=group, round=round)
        out.append(record)
    return out
