"""The hand-written parts of ``bench/loop.py``: held-out/training prompts from the HH file,
the synthetic annotators, and the statistics. Everything else in the loop is the real CLI.

Synthetic annotators (Gao et al. 2022, "Scaling laws for reward model overoptimization", §2):
each one ranks a task's K candidates by ``g_i / τ + Gumbel noise``, sorted. For any two
candidates the difference of two Gumbel variables is logistic, so every pair follows
Bradley-Terry exactly: P(a ≻ b) = σ((g_a − g_b) / τ) — and the K-way ranking is a
Plackett-Luce draw. τ is chosen so two independent annotators agree on ``target`` of the pairs
in expectation (E[p² + (1 − p)²] over the candidates' pairs), and the agreement they actually
reach is measured afterwards with the studio's own agreement report.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np


# --- prompts --------------------------------------------------------------------------------

def hh_prompts(path: Path, max_chars: int = 300) -> list[str]:
    """Single-turn prompts of the HH file (the first human turn of dialogues that have only
    one), short ones only, each once, in file order."""
    seen, out = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        if json.loads(line)["chosen"].count("\n\nHuman:") != 1:
            continue
        text = first_turn(line)
        if text and len(text) <= max_chars and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def split_prompts(prompts: list[str], n_train: int, n_heldout: int, seed: int) -> tuple[list, list]:
    shuffled = list(prompts)
    random.Random(seed).shuffle(shuffled)
    if len(shuffled) < n_train + n_heldout:
        raise SystemExit(f"only {len(shuffled)} prompts; asked for {n_train} + {n_heldout}")
    return shuffled[n_heldout:n_heldout + n_train], shuffled[:n_heldout]


def first_turn(hh_line: str) -> str:
    chosen = json.loads(hh_line)["chosen"]
    return chosen.split("\n\nHuman:", 1)[-1].split("\n\nAssistant:", 1)[0].strip()


def split_pairs_by_prompt(lines: list[str], held_out: set[str], seed: int) -> tuple[list, list]:
    """HH lines → halves A and B with no first human turn in both (so neither reward model
    has seen the other's prompts), leaving out every dialogue that starts with a held-out
    prompt; groups are dealt in a seeded order to whichever half has fewer pairs."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        turn = first_turn(line)
        if turn not in held_out:
            groups.setdefault(turn, []).append(line)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    a: list[str] = []
    b: list[str] = []
    for key in keys:
        (a if len(a) <= len(b) else b).extend(groups[key])
    return a, b


def write_prompts(path: Path, prompts: list[str], held_out: bool = False) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, **({"held_out": True} if held_out else {})}) + "\n")
    return path


# --- synthetic annotators -------------------------------------------------------------------

def expected_agreement(gaps: np.ndarray, tau: float) -> float:
    """E over pairs of p² + (1 − p)², p = σ(gap / τ): two annotators agree on a pair."""
    p = 1.0 / (1.0 + np.exp(-np.clip(gaps / tau, -50, 50)))
    return float(np.mean(p ** 2 + (1 - p) ** 2))


def choose_tau(gaps: np.ndarray, target: float) -> float:
    """The τ at which two annotators agree on ``target`` of the pairs (bisection on log τ).
    Agreement falls from (share of untied pairs + ties / 2) at τ → 0 to 0.5 at τ → ∞; a target
    above the top is met as closely as it can be."""
    lo, hi = 1e-6, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected_agreement(gaps, mid) > target else (lo, mid)
    return math.sqrt(lo * hi)


def score_tasks(tasks: list[dict], reward_fn) -> dict[str, float]:
    """Gold score of every candidate (response id → score)."""
    from policy.rewards import score_in_batches
    prompts, texts, ids = [], [], []
    for task in tasks:
        for r in task["responses"]:
            prompts.append(task["messages"])
            texts.append(r["text"])
            ids.append(r["id"])
    scores = score_in_batches(reward_fn, prompts, texts).tolist()
    return dict(zip(ids, scores))


def candidate_gaps(tasks: list[dict], gold: dict[str, float]) -> np.ndarray:
    return np.array([gold[a] - gold[b] for t in tasks for i, a in enumerate(t["response_ids"])
                     for b in t["response_ids"][i + 1:]], dtype=float)


def label_as_annotators(db_path: Path, gold_fn, names: list[str], overlap: int, target: float,
                        seed: int) -> dict:
    """Every task of the store labelled by the synthetic annotators through the studio's own
    queue (``next_task`` / ``submit_label``, as the UI does), ``overlap`` labels per task."""
    from annotate import agreement, store

    rng = np.random.default_rng(seed)
    with store.Store(db_path) as db:
        tasks = list(store.get_full_tasks(db, [t["id"] for t in store.list_tasks(db)]).values())
        gold = score_tasks(tasks, gold_fn)
        gaps = candidate_gaps(tasks, gold)
        tau = choose_tau(gaps, target)
        store.set_required_labels(db, overlap)      # the admin's overlap setting
        agree_gold = compared = labels = 0
        for name in names:
            while (task_id := store.next_task(db, name)) is not None:
                ids = store.get_task(db, task_id)["response_ids"]
                g = np.array([gold[i] for i in ids])
                order = np.argsort(-(g / tau + rng.gumbel(size=len(ids))), kind="stable")
                store.submit_label(db, name, task_id, [[ids[j]] for j in order])
                labels += 1
                rank = {ids[j]: pos for pos, j in enumerate(order)}
                for i, a in enumerate(ids):        # the annotator against the noise-free gold
                    for b in ids[i + 1:]:
                        if gold[a] != gold[b]:
                            compared += 1
                            agree_gold += (rank[a] < rank[b]) == (gold[a] > gold[b])
        report = agreement.report(db)
    per_task = report["per_task"]
    units = sum(t["directions"] for t in per_task)
    measured = sum(t["observed_agreement"] * t["directions"] for t in per_task) / units if units else None
    return {"tau": tau, "target_agreement": target,
            "expected_agreement": expected_agreement(gaps, tau), "annotator_agreement": measured,
            "krippendorff_alpha": report["alpha"], "annotators": names, "overlap": overlap,
            "labels": labels, "annotator_gold_accuracy": agree_gold / compared if compared else None,
            "tasks": len(tasks)}


def gold_pairs_file(db_path: Path, gold_fn, out: Path) -> int:
    """Pairs of the held-out tasks' candidates, chosen by the gold (ties left out): what the
    proxy's accuracy under the gold's preferences is measured on."""
    from annotate import store
    with store.Store(db_path, read_only=True) as db:
        held = store.held_out_task_ids(db)
        tasks = list(store.get_full_tasks(db, sorted(held)).values())
    gold = score_tasks(tasks, gold_fn)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for t in tasks:
            rs = t["responses"]
            for i, a in enumerate(rs):
                for b in rs[i + 1:]:
                    if gold[a["id"]] == gold[b["id"]]:
                        continue
                    hi, lo = (a, b) if gold[a["id"]] > gold[b["id"]] else (b, a)
                    f.write(json.dumps({"prompt": t["messages"], "chosen": hi["text"],
                                        "rejected": lo["text"]}, ensure_ascii=False) + "\n")
                    n += 1
    return n


# --- statistics -----------------------------------------------------------------------------

def bootstrap_ci(diffs: np.ndarray, seed: int, n: int = 4000) -> list[float]:
    """95 % percentile-bootstrap interval of the mean over prompts."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n, len(diffs)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def gains(samples_jsonl: Path, proxy_fn, seed: int) -> dict:
    """Gold (scored by `eval policy`) and proxy (scored here, on the same answers) gains of
    the policy over the reference, per held-out prompt, with bootstrap intervals."""
    from policy.rewards import score_in_batches
    rows = [json.loads(l) for l in samples_jsonl.read_text(encoding="utf-8").splitlines() if l]
    prompts = [r["prompt"] for r in rows]
    gold = np.array([r["reward_policy"] - r["reward_reference"] for r in rows])
    proxy = (score_in_batches(proxy_fn, prompts, [r["policy"] for r in rows])
             - score_in_batches(proxy_fn, prompts, [r["reference"] for r in rows])).numpy()
    return {"gold_gain": float(gold.mean()), "gold_gain_ci": bootstrap_ci(gold, seed),
            "proxy_gain": float(proxy.mean()), "proxy_gain_ci": bootstrap_ci(proxy, seed + 1),
            "n_prompts": len(rows)}


def plot_curve(points: list[dict], png: Path, title: str) -> None:
    """Gold and proxy gain against KL (one point per RLOO checkpoint, step 0 = the reference)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    pts = [{"step": 0, "kl": 0.0, "gold_gain": 0.0, "proxy_gain": 0.0,
            "gold_gain_ci": [0.0, 0.0]}] + points
    kl = [p["kl"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    # the proxy's scores have their own scale: a second axis
    twin = ax.twinx()
    twin.plot(kl, [p["proxy_gain"] for p in pts], "o--", color="tab:blue",
              label="proxy reward (trained on), right axis")
    twin.set_ylabel("proxy gain (its own units)")
    twin.legend(fontsize=8, loc="lower right")
    ax.errorbar(kl, [p["gold_gain"] for p in pts],
                yerr=[[p["gold_gain"] - p["gold_gain_ci"][0] for p in pts],
                      [p["gold_gain_ci"][1] - p["gold_gain"] for p in pts]],
                fmt="o-", capsize=3, color="tab:orange", label="gold reward (never trained on), 95 % CI")
    for p in pts:
        ax.annotate(str(p["step"]), (p["kl"], p["gold_gain"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("KL(policy ‖ reference) per answer, nats")
    ax.set_ylabel("reward gain over the reference")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
