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
    """Median, min and max (NaN for each when there is nothing to summarise; NaNs are skipped)."""
    values = [v for v in values if v == v]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def load_line() -> str:
    one, five, fifteen = load_average()
    return f"load average at start: {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def show(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    """'median 12.3 ms [10.1-14.2] (n=3)'."""
    s = spread(values)
    return (f"median {s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"
            f" (n={len(values)})")


def paired_ratio_line(new: str, old: str, what: dict[str, tuple[list[float], list[float]]]) -> str:
    """'ratio new/old: p95 median 0.62x [0.55-0.70], labels/s median 1.4x [1.2-1.6]': each
    measure's per-round ratio (rounds paired in order: A B A B), for benches whose sides are
    not ``run_rounds`` commands (servers, browsers)."""
    parts = []
    for name, (a, b) in what.items():
        r = spread([x / y for x, y in zip(a, b) if y])
        parts.append(f"{name} median {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]")
    return f"ratio {new}/{old}: " + ", ".join(parts)


def summarize(results: dict[str, list[dict]], ours: str) -> dict:
    """Per side: spread of throughput (per wall second and, when the sides report it, per CPU
    second of their own) and peak RSS; per peer: spread of our/peer ratios, each ratio taken
    within one round."""
    keys = ["samples_per_s", "peak_rss_mb"]
    if all("samples_per_cpu_s" in r for runs in results.values() for r in runs):
        keys.append("samples_per_cpu_s")
    sides = {side: {key: spread([r[key] for r in runs]) for key in keys}
             for side, runs in results.items()}
    names = {"samples_per_s": "throughput", "peak_rss_mb": "peak_rss", "samples_per_cpu_s": "cpu_throughput"}
    ratios = {peer: {names[key]: spread([a[key] / b[key] for a, b in zip(results[ours], runs)])
                     for key in keys}
              for peer, runs in results.items() if peer != ours}
    return {"sides": sides, "ratios": ratios}


def ratio_line(ours: str, peer: str, ratio: dict) -> str:
    t, m = ratio["throughput"], ratio["peak_rss"]
    return (f"ratio {ours}/{peer}: throughput median {t['median']:.2f}x "
            f"[{t['min']:.2f}-{t['max']:.2f}], peak RSS median {m['median']:.2f}x")


def report(results: dict[str, list[dict]], ours: str, *, labels: dict[str, str] | None = None,
           load_at_start: Sequence[float], extra: Callable[[dict], str] | None = None,
           notes: Callable[[dict], list[str]] | None = None) -> dict:
    """Print the table (median [min-max] per side), ``notes(summary)`` and, last, one ratio
    line per peer, in the order of ``results`` (plain peer first); return the summary.

    When the sides report ``samples_per_cpu_s`` (samples per second of their own CPU time),
    its medians and ratios are printed too: on a loaded machine the wall-clock figure moves
    with what else runs, the CPU-time one much less."""
    labels = labels or {}
    name = lambda side: labels.get(side, side)
    summary = summarize(results, ours)
    rounds = len(results[ours])
    print(f"{rounds} rounds, sides interleaved; load average at start "
          f"{load_at_start[0]:.2f} {load_at_start[1]:.2f} {load_at_start[2]:.2f} "
          f"(1/5/15 min), {os.cpu_count()} CPUs")
    cpu = "samples_per_cpu_s" in summary["sides"][ours]
    print(f"{'side':<26}{'samples/s median [min-max]':>28}{'peak RSS MB median [min-max]':>30}"
          + (f"{'samples/CPU-s median [min-max]':>32}" if cpu else ""))
    for side, s in summary["sides"].items():
        t, m = s["samples_per_s"], s["peak_rss_mb"]
        row = (f"{name(side):<26}{t['median']:>10.3f} [{t['min']:.3f}-{t['max']:.3f}]"
               f"{m['median']:>14.0f} [{m['min']:.0f}-{m['max']:.0f}]")
        if cpu:
            c = s["samples_per_cpu_s"]
            row += f"{c['median']:>14.3f} [{c['min']:.3f}-{c['max']:.3f}]"
        print(row + (f"  {extra(results[side][-1])}" if extra else ""))
    if cpu:
        for peer, ratio in summary["ratios"].items():
            c = ratio["cpu_throughput"]
            print(f"per CPU-second of each side: {name(ours)}/{name(peer)} median {c['median']:.2f}x "
                  f"[{c['min']:.2f}-{c['max']:.2f}]")
    for line in notes(summary) if notes else []:
        print(line)
    for peer, ratio in summary["ratios"].items():
        print(ratio_line(name(ours), name(peer), ratio))
    return summary
