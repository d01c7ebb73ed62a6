"""Agreement statistics between annotators (people or AI judges).

(The UI engineer's fuller module — Krippendorff's alpha, per-annotator statistics — replaces
this one at merge; ``cohen_kappa`` here behaves exactly like theirs.)
"""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters over the same items (Cohen 1960):

        kappa = (p_o - p_e) / (1 - p_e)

    p_o is the observed agreement, p_e the agreement expected by chance from each rater's
    own label frequencies: p_e = sum_c p_a(c) * p_b(c). When p_e = 1 (both raters always give
    one and the same label) kappa is undefined: 1.0 if they agree on every item, else 0.0.
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs two equally long label lists, not {len(a)} and {len(b)}")
    if not a:
        raise ValueError("cohen_kappa needs at least one item")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)
