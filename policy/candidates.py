"""The generation job: K candidate responses per prompt, ready to be labelled.

``generate_candidates(config, prompts, run_dir)`` never touches the database. It writes its run
folder with ``RunLog`` (``responses.jsonl``: one line per response; the responses of one task
share a ``group``, which the database owner turns into a task when it ingests the folder) and
returns the same candidates as lines of the ``responses`` import format, one per prompt:

    {"prompt": [{"role": "user", "content": ...}], "tags": [...],
     "responses": [{"text", "model", "adapter", "gen_params"}, ...],
     "task": {"kind": "ranking" | "pairwise", "responses": [0, 3], "round": 0} | null}

``task.responses`` are indices into ``responses``. Candidates with the same text (likely at low
temperature) are kept once: a task never shows the same answer twice.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from annotate.runlog import RunLog, read_run
from annotate.store import prompt_id
from rewardmodel.hub import DEFAULT_POLICY

# torch, transformers and the sampling code are imported where they are used, so a bad option
# or a bad prompts file is refused in a moment instead of after seconds of imports
TASK_KINDS = ("ranking", "pairwise", "mixed", "none")
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
    task: str = "none"                           # ranking | pairwise | mixed (alternate) | none
    round: int = 0
    dtype: str = "float32"

    def check(self) -> "GenerateConfig":
        """Raise ValueError with one clear sentence on a bad setting."""
        if not 1 <= self.k <= 9:
            raise ValueError(f"--k must be between 1 and 9 (a task compares at most 9), not {self.k}")
        if self.task not in TASK_KINDS:
            raise ValueError(f"--task must be one of {', '.join(TASK_KINDS)}, not {self.task!r}")
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
        return self

    def sampling(self) -> list:
        """One SamplingParams per temperature; candidate j uses entry j mod len."""
        from .generate import SamplingParams
        return [SamplingParams(max_new_tokens=self.max_new_tokens, temperature=t, top_p=self.top_p,
                               seed=self.seed) for t in self.temperatures]


def model_identity(model: str, adapter: str | None = None) -> tuple[str, str | None]:
    """(model, adapter) as recorded on each response: a policy run folder becomes its base
    spec and adapter folder; folders are made absolute so they mean the same from anywhere."""
    from .lm import policy_source
    base, run_adapter = policy_source(model)
    adapter = adapter or run_adapter
    if adapter and (Path(adapter) / "policy.json").exists():
        adapter = policy_source(adapter)[1]

    def absolute(spec):
        return str(Path(spec).resolve()) if spec and Path(spec).is_dir() else spec
    return absolute(base), absolute(adapter)


def task_indices(kind: str, n: int) -> list[int]:
    """Which of n distinct candidates a task shows: all of them (ranking), or the first and the
    last (pairwise: with cycled temperatures, the coolest and the hottest sample)."""
    if n < 2 or kind == "none":
        return []
    return list(range(n)) if kind == "ranking" else [0, n - 1]


def _parents(config: GenerateConfig) -> list[str]:
    """Run ids of the policy runs the model or adapter come from (lineage)."""
    ids = []
    for spec in (config.model, config.adapter):
        for folder in (Path(spec), Path(spec).parent) if spec else ():
            if (folder / "run.json").exists():
                ids.append(read_run(folder)["id"])
                break
    return list(dict.fromkeys(ids))


def generate_candidates(config: GenerateConfig, prompts: list[dict], run_dir: str | Path | None,
                        *, model=None, tok=None, progress: bool = True) -> list[dict]:
    """Answer each prompt (``{"messages", "tags"}``) K times; see the module docstring.

    ``run_dir=None`` writes no run folder (``prefstudio generate --out``). A loaded
    ``model``/``tok`` may be passed in (tests, benchmarks); otherwise they are loaded here.
    """
    config.check()
    # RunLog with is_main=False writes nothing: the same code path with or without a folder
    log = RunLog(run_dir or ".", "generate", asdict(config), parents=_parents(config),
                 is_main=run_dir is not None)
    try:
        if model is None:
            import torch
            from .lm import load_policy
            model, tok = load_policy(config.model, config.adapter,
                                     dtype=getattr(torch, config.dtype))
        lines = _generate(config, prompts, model, tok, log, progress)
    except BaseException as err:
        log.fail(err)
        raise
    return lines


def _generate(config, prompts, model, tok, log: RunLog, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm
    from .generate import SamplingParams, generate

    model_name, adapter = model_identity(config.model, config.adapter)
    sampling = config.sampling()
    chunk = config.batch_size * CHUNK_BATCHES
    bar = tqdm(total=len(prompts) * config.k, desc="generate", unit="resp",
               disable=not progress or len(prompts) * config.k < 8)
    lines, tokens, dropped, started = [], 0, 0, time.perf_counter()
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        if config.seed is not None:  # a different stream per chunk, reproducible as a whole
            sampling = [SamplingParams(**{**asdict(p), "seed": config.seed + start}) for p in sampling]
        results = generate(model, tok, [p["messages"] for p in part], sampling, k=config.k,
                           batch_size=config.batch_size, progress=bar)
        records = []
        for offset, (prompt, candidates) in enumerate(zip(part, results)):
            line = _line(config, start + offset, prompt, candidates, sampling, model_name, adapter)
            dropped += config.k - len(line["responses"])
            tokens += sum(c["tokens"] for c in candidates)
            lines.append(line)
            records += _records(line)
        log.record("responses", records)
        seconds = time.perf_counter() - started
        log.metric(len(lines), candidates=len(lines) * config.k, tokens=tokens,
                   tokens_per_s=tokens / max(seconds, 1e-9))
    bar.close()
    seconds = time.perf_counter() - started
    summary = {"prompts": len(lines), "responses": sum(len(x["responses"]) for x in lines),
               "dropped": dropped, "tasks": sum(x["task"] is not None for x in lines),
               "tokens": tokens, "seconds": round(seconds, 2),
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
    log.log(f"generated {summary}")
    log.finish("done", **summary)
    return lines


def _line(config, index, prompt, candidates, sampling, model_name, adapter) -> dict:
    """One ``responses``-format line: distinct candidates in candidate order, and the task."""
    responses, seen = [], set()
    for cand in candidates:
        if not cand["text"] or cand["text"] in seen:  # empty or a repeat: nothing to compare
            continue
        seen.add(cand["text"])
        params = sampling[cand["params"]]
        responses.append({"text": cand["text"], "model": model_name, "adapter": adapter,
                          "gen_params": {"temperature": params.temperature, "top_p": params.top_p,
                                         "max_new_tokens": params.max_new_tokens,
                                         "seed": params.seed, "finished": cand["finished"]}})
    kind = config.task if config.task != "mixed" else ("ranking", "pairwise")[index % 2]
    chosen = task_indices(kind, len(responses))
    task = None
    if chosen:
        task = {"kind": "pairwise" if len(chosen) == 2 else "ranking", "responses": chosen,
                "round": config.round}
    line = {"prompt": prompt["messages"]}
    if prompt.get("tags"):
        line["tags"] = prompt["tags"]
    return {**line, "responses": responses, "task": task}


def _records(line: dict) -> list[dict]:
    """The line as run-folder records: one per response, the task's members share a group."""
    group = prompt_id(line["prompt"])
    members = set(line["task"]["responses"]) if line["task"] else set()
    out = []
    for i, response in enumerate(line["responses"]):
        record = {"prompt": line["prompt"], **response}
        if i in members:
            record.update(group=group, round=line["task"]["round"])
        out.append(record)
    return out
