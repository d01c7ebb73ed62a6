"""Figures of interleaved side-by-side runs (A B A B ..., fresh processes each): the median
and the spread (min-max) of each side, and of the ratio of the paired rounds.

    ratio prefstudio/TRL: throughput median 1.23x [1.10-1.31], peak RSS median 0.80x
is the form ``bench/rm.py`` prints; ``ratio_line`` prints the same for any two sides.
"""
from __future__ import annotations

import os
import statistics


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average at start: {one:.2f} {five:.2f} {fifteen:.2f} (2 cores)"


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max); NaNs when there is nothing to summarise."""
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), min(values), max(values)


def show(values: list[float], unit: str = "", digits: int = 1) -> str:
    """'median 12.3 ms [10.1-14.2] (n=3)'."""
    mid, lo, hi = spread(values)
    return f"median {mid:.{digits}f}{unit} [{lo:.{digits}f}-{hi:.{digits}f}] (n={len(values)})"


def ratio_line(new: str, old: str, what: dict[str, tuple[list[float], list[float]]]) -> str:
    """'ratio new/old: p95 median 0.62x [0.55-0.70], labels/s median 1.4x [1.2-1.6]': each
    measure's per-round ratio (rounds paired in order: A B A B)."""
    parts = []
    for name, (a, b) in what.items():
        ratios = [x / y for x, y in zip(a, b) if y]
        mid, lo, hi = spread(ratios)
        parts.append(f"{name} median {mid:.2f}x [{lo:.2f}-{hi:.2f}]")
    return f"ratio {new}/{old}: " + ", ".join(parts)
