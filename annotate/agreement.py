"""Agreement statistics between annotators (people or AI judges)."""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items (Cohen 1960):

        kappa = (p_o - p_e) / (1 - p_e)

    p_o is the observed agreement, p_e the agreement expected by chance from each rater's
    own category frequencies: p_e = sum_c p_a(c) * p_b(c). None when undefined (no items,
    or both raters always use one and the same category, so p_e = 1).
    """
    if len(a) != len(b):
        raise ValueError("cohen_kappa needs two equally long sequences")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if p_e == 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)
