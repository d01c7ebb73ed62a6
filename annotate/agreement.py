"""How far annotators agree, how fast they work, and whether the order shown sways them.

Every label ranks a task's responses; for each unordered pair of responses (a, b) of a task a
label says one of three things: a above b, b above a, or a tie. Those pairwise *directions*
are the units the statistics below work on, so pairwise and K-way tasks are measured alike
(a K-way label contributes its C(K,2) directions).

    alpha        Krippendorff's alpha, nominal, over all units with two or more labels
                 (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability")
    per annotator  agreement with the majority of the *other* annotators of each unit,
                 labels per hour and median seconds per label (from duration_ms)
    per task     observed agreement: the share of annotator pairs that agree, per direction
    position bias  how often the response shown first wins a pairwise label (0.5 = no bias)
"""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from typing import Hashable, Iterable, Sequence

from . import store


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    p_o is the share of items they label alike, p_e the share expected by chance from each
    rater's own label frequencies (Cohen 1960). When chance agreement is already perfect
    (both raters always give one and the same label) kappa is undefined; this returns 1.0
    if they also agree on every item, else 0.0.
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs two equally long label lists, not {len(a)} and {len(b)}")
    if not a:
        raise ValueError("cohen_kappa needs at least one item")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    freq_a, freq_b = Counter(a), Counter(b)
    p_e = sum(freq_a[c] * freq_b[c] for c in freq_a) / (n * n)
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal values; each unit is the list of values it received.

    Units with fewer than two values carry no pairable information and are dropped. With the
    coincidence matrix o (each unit of m values adds 1/(m-1) per ordered pair of its values)
    and n_c its row sums, n = sum n_c:

        alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k

    None when undefined (fewer than two pairable values, or every value in one category).
    """
    o: dict[tuple, float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                o[(c, k)] += pairs / (m - 1)
    n_c: dict[Hashable, float] = defaultdict(float)
    for (c, _), value in o.items():
        n_c[c] += value
    n = sum(n_c.values())
    disagree_expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    if n < 2 or disagree_expected == 0:
        return None
    disagree_observed = sum(v for (c, k), v in o.items() if c != k)
    return 1.0 - (n - 1) * disagree_observed / disagree_expected


def directions(ranking: Sequence[Sequence[str]]) -> dict[tuple[str, str], str]:
    """{(a, b): "first" | "second" | "tie"} for every pair a < b of the ranked responses."""
    rank = {rid: gi for gi, group in enumerate(ranking) for rid in group}
    out = {}
    ids = sorted(rank)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            out[(a, b)] = "tie" if rank[a] == rank[b] else ("first" if rank[a] < rank[b] else "second")
    return out


def _majority(values: list[str]) -> str | None:
    """The most frequent value if it is strictly the most frequent, else None."""
    if not values:
        return None
    top = Counter(values).most_common(2)
    if len(top) > 1 and top[0][1] == top[1][1]:
        return None
    return top[0][0]


def agreement_report(labels: list[dict]) -> dict:
    """Statistics over current labels as ``store.human_labels`` returns them."""
    # unit (task, a, b) → {annotator: direction}
    units: dict[tuple, dict[str, str]] = defaultdict(dict)
    for label in labels:
        for pair, value in directions(label["ranking"]).items():
            units[(label["task_id"], *pair)][label["annotator"]] = value
    shared = {u: votes for u, votes in units.items() if len(votes) >= 2}

    # per annotator: agreement with the others' majority (leave-one-out), speed
    agree, compared = Counter(), Counter()
    for votes in shared.values():
        for annotator, value in votes.items():
            majority = _majority([v for a, v in votes.items() if a != annotator])
            if majority is not None:
                compared[annotator] += 1
                agree[annotator] += value == majority
    by_annotator: dict[str, list[dict]] = defaultdict(list)
    for label in labels:
        by_annotator[label["annotator"]].append(label)
    annotators = []
    for name in sorted(by_annotator):
        durations = [l["duration_ms"] for l in by_annotator[name] if l.get("duration_ms")]
        annotators.append({
            "annotator": name,
            "labels": len(by_annotator[name]),
            "compared": compared[name],
            "agreement_with_majority": agree[name] / compared[name] if compared[name] else None,
            "labels_per_hour": 3_600_000 * len(durations) / sum(durations) if durations else None,
            "median_seconds_per_label": statistics.median(durations) / 1000 if durations else None,
        })

    # per task: share of annotator pairs that agree, over the task's directions
    per_task: dict[str, list[float]] = defaultdict(list)
    task_labels = Counter(label["task_id"] for label in labels)
    for (task_id, _, _), votes in shared.items():
        m = len(votes)
        same = sum(c * (c - 1) for c in Counter(votes.values()).values())
        per_task[task_id].append(same / (m * (m - 1)))
    tasks = [{"task_id": t, "labels": task_labels[t], "directions": len(v),
              "observed_agreement": sum(v) / len(v)} for t, v in sorted(per_task.items())]

    return {
        "labels": len(labels),
        "annotators": len(by_annotator),
        "units": len(units),
        "shared_units": len(shared),
        "alpha": krippendorff_alpha(list(votes.values()) for votes in shared.values()),
        "position_bias": position_bias(labels),
        "per_annotator": annotators,
        "per_task": tasks,
    }


# Below this many labels the normal approximation's interval means nothing (from n = 1 it is
# [1, 1] or [0, 0]); the rule of thumb n·p ≥ 5 and n·(1-p) ≥ 5 at p = 0.5 gives 10.
MIN_INTERVAL_N = 10


def position_bias(labels: list[dict]) -> dict:
    """How often the response shown first wins a (non-tied) pairwise label.

    0.5 means position does not matter. ``interval`` is a 95% normal-approximation interval
    on that rate, so a rate whose interval excludes 0.5 is worth a look; it is None below
    ``MIN_INTERVAL_N`` labels (``min_n`` says how many it needs).
    """
    n = wins = 0
    for label in labels:
        shown, ranking = label.get("shown_order"), label["ranking"]
        if not shown or len(shown) != 2 or len(ranking) != 2:
            continue
        n += 1
        wins += ranking[0][0] == shown[0]
    if not n:
        return {"pairwise_labels": 0, "first_shown_wins": None, "interval": None,
                "min_n": MIN_INTERVAL_N}
    rate = wins / n
    half = 1.96 * math.sqrt(rate * (1 - rate) / n)
    interval = [max(0.0, rate - half), min(1.0, rate + half)] if n >= MIN_INTERVAL_N else None
    return {"pairwise_labels": n, "first_shown_wins": rate, "interval": interval,
            "min_n": MIN_INTERVAL_N}


def report(db: store.Store, source: str = "human") -> dict:
    """``agreement_report`` over the store's current labels of ``source`` (human, ai, both)."""
    return agreement_report(store.human_labels(db, source=source))
