"""The Models page's questions: every reward model and policy with its headline metric, round,
parents and labels; the lineage from one round's labels to the next round's candidates; and,
per round, labels, agreement, reward-model accuracy and policy win rate.

Evaluations are runs of their own (``eval_rm``, ``eval_policy``: `prefstudio eval ... --out`,
or the studio's evaluation jobs) whose parents name the evaluated run and whose metrics hold
the headline numbers (``accuracy``, ``calibration_error``; ``reward_gain``, ``win_rate``,
``kl``). A reward model never evaluated that way shows the held-out accuracy of its own
training split (the last ``eval_accuracy`` it logged).
"""
from __future__ import annotations

import json
from collections import defaultdict

from .db import Store, StoreError

RM_KINDS = ("rm",)
POLICY_KINDS = ("sft", "rs", "dpo", "ppo", "rloo", "rrhf", "cai")
EVAL_OF = {"eval_rm": RM_KINDS, "eval_policy": POLICY_KINDS}
RM_METRICS = ("accuracy", "calibration_error")
POLICY_METRICS = ("reward_gain", "win_rate", "kl")


def _runs(db: Store) -> dict[str, dict]:
    rows = db.query("""SELECT r.id, r.kind, r.status, r.parents, r.artifact_dir, r.started_at,
                              r.config, i.labels, i.round
                       FROM runs r LEFT JOIN (
                           SELECT ri.run_id, count(DISTINCT ri.label_id) AS labels,
                                  max(t.round) AS round
                           FROM run_inputs ri LEFT JOIN labels l ON l.id = ri.label_id
                                LEFT JOIN tasks t ON t.id = l.task_id
                           GROUP BY ri.run_id) i ON i.run_id = r.id
                       ORDER BY r.started_at, r.id""")
    last = defaultdict(dict)   # run → metric → its value at the latest step
    for m in db.query("SELECT run_id, name, arg_max(value, step) AS value FROM metrics "
                      "GROUP BY run_id, name"):
        last[m["run_id"]][m["name"]] = m["value"]
    runs = {}
    for r in rows:
        r["parents"] = list(r["parents"] or [])
        r["labels"] = int(r["labels"] or 0)
        r["metrics"] = last.get(r["id"], {})
        try:
            r["config"] = json.loads(r["config"]) if r["config"] else {}
        except ValueError:
            r["config"] = {}
        runs[r["id"]] = r
    return runs


def _round_of(run_id: str, runs: dict[str, dict], seen: frozenset = frozenset()) -> int | None:
    """The round a run belongs to: the newest round of the labels it trained on, else its
    parents' (a policy trained against a reward model), else a round named in its config."""
    run = runs.get(run_id)
    if run is None or run_id in seen:
        return None
    if run["round"] is not None:
        return int(run["round"])
    rounds = [r for p in run["parents"] if (r := _round_of(p, runs, seen | {run_id})) is not None]
    if rounds:
        return max(rounds)
    value = run["config"].get("round") if isinstance(run["config"], dict) else None
    return value if isinstance(value, int) else None


def _latest_eval(run_id: str, runs: dict[str, dict], kind: str) -> dict | None:
    evals = [r for r in runs.values() if r["kind"] == kind and run_id in r["parents"]
             and r["status"] == "done" and r["metrics"]]
    return evals[-1] if evals else None   # runs are in start order


def model_runs(db: Store) -> list[dict]:
    """Every reward model and policy run, newest first: run_id, kind, status, round, parents,
    labels (how many it trained on), the headline metrics and the evaluation they come from."""
    runs = _runs(db)
    out = []
    for r in runs.values():
        if r["kind"] not in RM_KINDS + POLICY_KINDS:
            continue
        is_rm = r["kind"] in RM_KINDS
        ev = _latest_eval(r["id"], runs, "eval_rm" if is_rm else "eval_policy")
        names = RM_METRICS if is_rm else POLICY_METRICS
        metrics = {n: (ev["metrics"].get(n) if ev else None) for n in names}
        if is_rm and metrics["accuracy"] is None:
            metrics["accuracy"] = r["metrics"].get("eval_accuracy")
        out.append({"run_id": r["id"], "kind": r["kind"], "role": "reward_model" if is_rm else "policy",
                    "status": r["status"], "round": _round_of(r["id"], runs),
                    "parents": r["parents"], "labels": r["labels"], **metrics,
                    "eval_run": ev["id"] if ev else None, "artifact_dir": r["artifact_dir"],
                    "started_at": r["started_at"]})
    return out[::-1]


def eval_run_of(db: Store, run_id: str) -> dict | None:
    """The newest finished ``eval_policy`` (or ``eval_rm``) run of a model run, or None."""
    runs = _runs(db)
    if run_id not in runs:
        raise StoreError(f"unknown run id {run_id!r}")
    kind = "eval_rm" if runs[run_id]["kind"] in RM_KINDS else "eval_policy"
    return _latest_eval(run_id, runs, kind)


def _candidates(db: Store, runs: dict[str, dict]) -> dict[str, dict[int, int]]:
    """Per policy run: tasks per round whose responses it generated (itself, as RS does, or
    through a generation run naming it as parent or adapter)."""
    rows = db.query("""SELECT r.run_id, r.adapter, t.round, count(DISTINCT t.id) AS tasks
                       FROM tasks t, unnest(t.response_ids) AS u(rid)
                            JOIN responses r ON r.id = u.rid
                       WHERE r.run_id IS NOT NULL OR r.adapter IS NOT NULL
                       GROUP BY ALL""")
    by_dir = {str(r["artifact_dir"]): rid for rid, r in runs.items() if r["artifact_dir"]}
    out: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        owners = set()
        gen = runs.get(row["run_id"])
        if gen is not None:
            owners |= {gen["id"]} | set(gen["parents"])
        if row["adapter"]:
            owners |= {row["adapter"], by_dir.get(row["adapter"], "")}
        for owner in owners:
            if owner in runs and runs[owner]["kind"] in POLICY_KINDS:
                out[owner][int(row["round"])] += int(row["tasks"])
    return out


def lineage_graph(db: Store) -> dict:
    """Nodes and edges: labels of round N → reward model → policy → candidates of round M.
    Nodes: {id, column (0 labels, 1 reward models, 2 policies, 3 candidates), label, detail}."""
    runs = _runs(db)
    models = {m["run_id"]: m for m in model_runs(db)}
    labels = {r["round"]: r["n"] for r in db.query(
        """SELECT t.round, count(*) AS n FROM labels l JOIN tasks t ON t.id = l.task_id
           WHERE l.superseded_by IS NULL GROUP BY t.round""")}
    nodes, edges = {}, []

    def node(nid, column, label, detail=""):
        nodes.setdefault(nid, {"id": nid, "column": column, "label": label, "detail": detail})

    for rid, m in sorted(models.items(), key=lambda kv: str(kv[1]["started_at"])):
        column = 1 if m["role"] == "reward_model" else 2
        metric = (f"acc {m['accuracy']:.2f}" if m["role"] == "reward_model" and m["accuracy"] is not None
                  else f"win {m['win_rate']:.2f}" if m["role"] == "policy" and m["win_rate"] is not None
                  else m["status"])
        node(rid, column, rid, f"{m['kind']} · {metric}")
        if m["labels"] and m["round"] is not None:
            lid = f"labels:{m['round']}"
            node(lid, 0, f"round {m['round']} labels", str(labels.get(m["round"], 0)))
            edges.append((lid, rid))
        for parent in m["parents"]:
            if parent in models:
                edges.append((parent, rid))
    for policy, rounds in _candidates(db, runs).items():
        for rnd, n in rounds.items():
            cid = f"candidates:{rnd}"
            node(cid, 3, f"round {rnd} candidates", f"{n} tasks")
            edges.append((policy, cid))
    return {"nodes": list(nodes.values()), "edges": sorted(set(edges))}


def rounds_summary(db: Store) -> list[dict]:
    """Per round: labels collected (human, AI), the human labels' agreement (Krippendorff's
    alpha), the best held-out accuracy of the round's reward models and the best win rate of
    its policies against their reference (the round-0 model they started from)."""
    from ..agreement import agreement_report
    from .browse import human_labels

    round_of_task = {r["id"]: r["round"] for r in db.query("SELECT id, round FROM tasks")}
    counts = {(r["round"], r["source"]): r["n"] for r in db.query(
        """SELECT t.round, l.source, count(*) AS n FROM labels l JOIN tasks t ON t.id = l.task_id
           WHERE l.superseded_by IS NULL GROUP BY ALL""")}
    by_round = defaultdict(list)
    for label in human_labels(db, "human"):
        by_round[round_of_task.get(label["task_id"])].append(label)
    rm_acc, win = {}, {}   # the round's best: what the round achieved, whatever the order
    for m in model_runs(db):
        if m["round"] is None:
            continue
        for role, key, best in (("reward_model", "accuracy", rm_acc), ("policy", "win_rate", win)):
            if m["role"] == role and m[key] is not None and m[key] > best.get(m["round"], ("", -1.0))[1]:
                best[m["round"]] = (m["run_id"], m[key])
    rounds = sorted({r for r, _ in counts} | set(rm_acc) | set(win)
                    | set(round_of_task.values()))
    out = []
    for rnd in rounds:
        labels = by_round.get(rnd, [])
        alpha = agreement_report(labels)["alpha"] if labels else None
        out.append({"round": rnd, "human_labels": counts.get((rnd, "human"), 0),
                    "ai_labels": counts.get((rnd, "ai"), 0), "agreement": alpha,
                    "reward_model": rm_acc.get(rnd, (None, None))[0],
                    "rm_accuracy": rm_acc.get(rnd, (None, None))[1],
                    "policy": win.get(rnd, (None, None))[0],
                    "win_rate": win.get(rnd, (None, None))[1]})
    return out


def next_round(db: Store) -> int:
    """The round after the newest one that has tasks (0 for an empty store)."""
    newest = db.scalar("SELECT max(round) FROM tasks")
    return 0 if newest is None else int(newest) + 1
