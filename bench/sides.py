"""Side-by-side benchmarks that survive a noisy machine: sides interleaved, medians, spreads.

Each side is a command that runs one measurement in a FRESH process (so its peak RSS is its
own and no warm cache carries over) and prints one line ``RESULT {json}`` holding at least
``samples_per_s`` and ``peak_rss_mb``. ``run_rounds`` runs the sides interleaved, A B A B …,
for ``rounds`` rounds: a burst of load from someone else's job then hits both sides of a
round, not one side's whole series. ``report`` prints each side's median and [min-max] over the
rounds, the load average at the start, and one ratio line per peer side:

    ratio prefstudio/TRL: throughput median 1.23x [1.10-1.31], peak RSS median 0.80x

The throughput ratio is taken within each round (ours over the peer's run next to it) and its
median and [min-max] are over the rounds; the memory ratio is the median of the per-round ratios.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

RESULT = "RESULT "
CODE_ROOT = "PREFSTUDIO_CODE_ROOT"   # a side's product code from another checkout (a baseline)
PACKAGES = ("annotate", "cli", "harness", "policy", "rewardmodel")


def use_code_root() -> str | None:
    """In a side's process: when ``PREFSTUDIO_CODE_ROOT`` names a checkout (say a worktree of
    the commit before a change), import prefstudio's packages from there, so one run measures
    the change against its baseline, interleaved like any other pair of sides."""
    root = os.environ.get(CODE_ROOT)
    if not root:
        return None
    for name in list(sys.modules):
        if name.split(".")[0] in PACKAGES:
            del sys.modules[name]
    sys.path.insert(0, root)
    return root


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15-minute load averages (what else is running shows here)."""
    return os.getloadavg()


def emit(result: dict) -> None:
    """A side's one line for the parent (``run_rounds`` reads the last such line)."""
    print(RESULT + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT):]) if lines else None


def run_rounds(commands: dict[str, Sequence[str]], rounds: int, *, cwd: str | None = None,
               log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
               ) -> dict[str, list[dict]]:
    """``{side: [result of round 1, round 2, …]}``, the sides run one after the other in the
    order given, round after round, each in a new process. A side that fails stops the run."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    results: dict[str, list[dict]] = {side: [] for side in commands}
    for r in range(rounds):
        for side, cmd in commands.items():
            start = time.perf_counter()
            proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)
            result = parse_result(proc.stdout)
            if proc.returncode != 0 or result is None:
                raise SystemExit(f"{side} failed in round {r + 1} (exit {proc.returncode}):\n"
                                 f"{proc.stderr[-4000:]}")
            result.setdefault("side", side)
            result["round"] = r + 1
            result["load_1min"] = round(load_average()[0], 2)
            results[side].append(result)
            log(f"round {r + 1}/{rounds} {side}: {result['samples_per_s']:.3f} samples/s, "
                f"{result['peak_rss_mb']:.0f} MB, {time.perf_counter() - start:.0f} s wall, "
                f"load {result['load_1min']}")
    return results


def spread(values: Sequence[float]) -> dict:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(results: dict[str, list[dict]], ours: str) -> dict:
    """Per side: spread of throughput and peak RSS; per peer: spread of our/peer ratios,
    each ratio taken within one round."""
    sides = {side: {"samples_per_s": spread([r["samples_per_s"] for r in runs]),
                    "peak_rss_mb": spread([r["peak_rss_mb"] for r in runs])}
             for side, runs in results.items()}
    ratios = {}
    for peer, runs in results.items():
        if peer == ours:
            continue
        pairs = list(zip(results[ours], runs))
        ratios[peer] = {
            "throughput": spread([a["samples_per_s"] / b["samples_per_s"] for a, b in pairs]),
            "peak_rss": spread([a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in pairs])}
    return {"sides": sides, "ratios": ratios}


def ratio_line(ours: str, peer: str, ratio: dict) -> str:
    t, m = ratio["throughput"], ratio["peak_rss"]
    return (f"ratio {ours}/{peer}: throughput median {t['median']:.2f}x "
            f"[{t['min']:.2f}-{t['max']:.2f}], peak RSS median {m['median']:.2f}x")


def report(results: dict[str, list[dict]], ours: str, *, labels: dict[str, str] | None = None,
           load_at_start: Sequence[float], extra: Callable[[dict], str] | None = None) -> dict:
    """Print the table (median [min-max] per side) and one ratio line per peer, in the order
    of ``results`` (plain peer first); return the summary."""
    labels = labels or {}
    name = lambda side: labels.get(side, side)
    summary = summarize(results, ours)
    rounds = len(results[ours])
    print(f"{rounds} rounds, sides interleaved; load average at start "
          f"{load_at_start[0]:.2f} {load_at_start[1]:.2f} {load_at_start[2]:.2f} "
          f"(1/5/15 min), {os.cpu_count()} CPUs")
    print(f"{'side':<30}{'samples/s median [min-max]':>30}{'peak RSS MB median [min-max]':>32}")
    for side, s in summary["sides"].items():
        t, m = s["samples_per_s"], s["peak_rss_mb"]
        tail = f"  {extra(results[side][-1])}" if extra else ""
        print(f"{name(side):<30}{t['median']:>12.3f} [{t['min']:.3f}-{t['max']:.3f}]"
              f"{m['median']:>14.0f} [{m['min']:.0f}-{m['max']:.0f}]{tail}")
    for peer, ratio in summary["ratios"].items():
        print(ratio_line(name(ours), name(peer), ratio))
    return summary
