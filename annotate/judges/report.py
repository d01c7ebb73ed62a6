"""How well AI judges agree with people: the ``prefstudio judge --report`` JSON.

Evaluated on every pair of responses that has both an AI label and a human majority
(``store.pairs(source="human")``; pairs whose human votes split evenly have no majority and
are left out). Per judge, and per principle within each judge:

    n_pairs, n_tasks
    accuracy              the AI label orders the pair like the human majority (AI ties count
                          as disagreement)
    ties                  share of pairs the AI label tied (|p - 1/2| <= its tie threshold)
    cohen_kappa           kappa between the AI's and the majority's choice (tie a third category)
    accuracy_argmax       p(human's choice) > 1/2 from the judge's probabilities, no tie
                          threshold (exactly 1/2 counts half)
    first_order_accuracy  the same from the first order asked alone: what a single-order run
                          would have scored
    mean_p_human_choice   the judge's average probability for the human's choice
    position_consistency  share of pairs asked in both orders whose two orders agree
"""
from __future__ import annotations

from collections import defaultdict

from .. import store
from ..agreement import cohen_kappa


def agreement_report(db: store.Store, annotator: str | None = None) -> dict:
    majority = defaultdict(list)                   # task id -> [(pair, human's choice)]
    human_pairs = store.pairs(db, source="human")
    for r in human_pairs:
        majority[r["task_id"]].append((frozenset((r["chosen_id"], r["rejected_id"])), r["chosen_id"]))
    rows = defaultdict(list)                       # (judge, principle) -> evaluated pairs
    for label in store.ai_labels(db, annotator):
        for item in _pairs_of(label, majority):
            rows[(label["annotator"], label["principle"])].append(item)
    judges: dict[str, dict] = {}
    for name in sorted({j for j, _ in rows}):
        mine = [it for (j, _), items in rows.items() if j == name for it in items]
        judges[name] = _stats(mine) | {"principles": {
            p or "": _stats(items) for (j, p), items in sorted(rows.items(), key=lambda kv: str(kv[0]))
            if j == name}}
    return {"human_majority_pairs": len(human_pairs), "judges": judges}


def _pairs_of(label: dict, majority: dict) -> list[dict]:
    rank = {rid: g for g, group in enumerate(label["ranking"]) for rid in group}
    pair_info = {frozenset((p["x"], p["y"])): p for p in label["details"].get("pairs", [])}
    out = []
    for pair, chosen in majority.get(label["task_id"], []):
        x, y = sorted(pair)
        if x not in rank or y not in rank:
            continue
        ai = "tie" if rank[x] == rank[y] else (x if rank[x] < rank[y] else y)
        info = pair_info.get(pair, {})
        p_chosen = first_p_chosen = None
        if "p_x" in info:
            p_chosen = info["p_x"] if info["x"] == chosen else 1.0 - info["p_x"]
            first = info["orders"][0]
            p_a = first["p_first_shown"]
            first_p_chosen = p_a if first["shown"][0] == chosen else 1.0 - p_a
        out.append({"task_id": label["task_id"], "human": chosen, "ai": ai,
                    "human_cat": "lo" if chosen == x else "hi",
                    "ai_cat": "tie" if ai == "tie" else ("lo" if ai == x else "hi"),
                    "p_chosen": p_chosen, "first_p_chosen": first_p_chosen,
                    "consistent": info.get("position_consistent")})
    return out


def _share(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _hit(p: float | None) -> float | None:
    return None if p is None else (1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0)


def _stats(items: list[dict]) -> dict:
    soft = [it for it in items if it["p_chosen"] is not None]
    both = [it["consistent"] for it in items if it["consistent"] is not None]
    kappa = cohen_kappa([it["human_cat"] for it in items], [it["ai_cat"] for it in items]) \
        if items else None
    return {
        "n_pairs": len(items), "n_tasks": len({it["task_id"] for it in items}),
        "accuracy": _share([float(it["ai"] == it["human"]) for it in items]),
        "ties": _share([float(it["ai"] == "tie") for it in items]),
        "cohen_kappa": kappa,
        "accuracy_argmax": _share([_hit(it["p_chosen"]) for it in soft]),
        "first_order_accuracy": _share([_hit(it["first_p_chosen"]) for it in soft]),
        "mean_p_human_choice": _share([it["p_chosen"] for it in soft]),
        "position_consistency": _share([float(c) for c in both]),
        "n_both_orders": len(both),
    }
