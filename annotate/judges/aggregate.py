"""From verdicts to a label: both orders averaged, K-way pairs combined, ties, margin levels.

Position bias (Zheng et al. 2023, MT-Bench §3.3; Wang et al. 2023 "LLMs are not fair
evaluators"): a judge may prefer whatever it sees first. Asking both orders and averaging
cancels a constant bias:

    p(x > y) = ( p_A(x shown first) + 1 - p_A(y shown first) ) / 2

A pair is position-consistent when both orders name the same winner.

K-way tasks are judged as all C(K, 2) pairs; each response scores its mean preference over
the others, s_i = mean_j p(i > j) (its expected win rate), and the ranking sorts by s.
Responses whose implied preference (1 + s_i - s_j) / 2 is within ``tie_threshold`` of 1/2
share a tie group (for K = 2 that is exactly the pairwise rule |p - 1/2| <= tie_threshold).
"""
from __future__ import annotations

# p(winner) at or above the value → that Llama-2 margin level; below the last → negligibly.
DEFAULT_MARGINS = {"significantly": 0.9, "better": 0.75, "slightly": 0.6}


def combine_orders(p_x_order1: float, p_x_order2: float | None) -> tuple[float, bool | None]:
    """Average p(x > y) as read from each order (p_A when x was A, 1 - p_A when y was A).

    Returns the averaged probability and the position-consistency flag (None: one order).
    """
    if p_x_order2 is None:
        return p_x_order1, None
    consistent = _side(p_x_order1) == _side(p_x_order2)
    return (p_x_order1 + p_x_order2) / 2.0, consistent


def _side(p: float) -> int:
    return (p > 0.5) - (p < 0.5)


def margin_level(p_winner: float, margins: dict[str, float]) -> str:
    """The Llama-2 margin level whose confidence threshold p(winner) reaches."""
    for level, at_least in sorted(margins.items(), key=lambda kv: -kv[1]):
        if p_winner >= at_least:
            return level
    return "negligibly"


def pairwise_label(x: str, y: str, p_x: float, tie: float, margins: dict[str, float],
                   hard: bool) -> dict:
    """ranking, soft_prob (p of ranking[0]) and margin level of a two-response task."""
    if abs(p_x - 0.5) <= tie:
        return {"ranking": [[x, y]], "soft_prob": None, "margin_level": None}
    winner, loser, p_win = (x, y, p_x) if p_x > 0.5 else (y, x, 1.0 - p_x)
    if hard:  # a verdict parsed from text carries no confidence: neither soft target nor margin
        return {"ranking": [[winner], [loser]], "soft_prob": None, "margin_level": None}
    return {"ranking": [[winner], [loser]], "soft_prob": p_win,
            "margin_level": margin_level(p_win, margins)}


def ranking_from_pairs(ids: list[str], p: dict[tuple[str, str], float], tie: float
                       ) -> tuple[list[list[str]], dict[str, float]]:
    """Tie groups (best first) and scores s_i from p[(i, j)] = p(i > j) for every i < j in ids."""
    def pref(i: str, j: str) -> float:
        return p[(i, j)] if (i, j) in p else 1.0 - p[(j, i)]

    scores = {i: sum(pref(i, j) for j in ids if j != i) / (len(ids) - 1) for i in ids}
    order = sorted(ids, key=lambda i: -scores[i])            # stable: task order breaks exact ties
    groups: list[list[str]] = []
    for i in order:
        # Join the current group when within the threshold of the group's leader.
        if groups and (scores[groups[-1][0]] - scores[i]) / 2.0 <= tie:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups, scores
