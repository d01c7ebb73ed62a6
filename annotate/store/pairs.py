"""Rankings become training pairs, in SQL.

A current label ranks K responses as tie groups, best first. Each label expands to every
ordered pair (x, y) with x in an earlier group than y: C(K,2) pairs when there are no ties,
fewer with ties (two responses in one group give no pair). Per task and unordered pair the
labels of all annotators are then aggregated:

    votes_chosen   labels that put the majority's winner first
    votes_rejected labels that put it second
    n_labels       current labels of the task (labels that tied the two count against agreement)
    agreement      votes_chosen / n_labels
    margin         mean numeric margin of the majority's votes (margin_levels.value, 0 if none)
    margin_level   the majority's most frequent level (a tie between levels: the stronger one)
    soft_prob      mean p(chosen preferred) over the votes that carry one (AI judges)

A pair whose votes split evenly has no majority and is left out.
"""
from __future__ import annotations

from typing import Sequence

from .db import Store, StoreError
from .items import MAX_K

# Each current label's tie groups are paired by joining the label with every pair of group
# positions gi < gj of a ranking with that many groups, and each (better group, worse group) by
# joining with every pair of member positions (ia, ib) of groups of those sizes. The joins are on
# equality and yield exactly the pairs: no lambdas, no rows filtered away afterwards. (Flattening
# each ranking with a group index per response and joining all position pairs i < j, then
# dropping pairs inside a tie group, is ~2x slower: bench/store.py, BENCHMARKS.md.)
_LABEL_PAIRS = """
WITH cur AS (
    SELECT l.id AS label_id, l.task_id, l.annotator, l.source, l.judge, l.principle,
           l.ranking, l.margin_level, l.soft_prob, l.shown_order{task_columns}{margin_column}
    FROM labels l{task_join}{margin_join}
    WHERE l.superseded_by IS NULL {where}
),
group_pairs AS (        -- rankings of n tie groups: group gi is preferred to group gj
    SELECT n.range::INTEGER AS n, a.range::INTEGER AS gi, b.range::INTEGER AS gj
    FROM range(2, %(k)d + 1) n, range(1, %(k)d + 1) a, range(1, %(k)d + 1) b
    WHERE a.range < b.range AND b.range <= n.range
),
member_pairs AS (       -- groups of na and nb responses: member ia of one, ib of the other
    SELECT a.range::INTEGER AS na, b.range::INTEGER AS nb, x.range::INTEGER AS ia, y.range::INTEGER AS ib
    FROM range(1, %(k)d) a, range(1, %(k)d) b, range(1, %(k)d) x, range(1, %(k)d) y
    WHERE a.range + b.range <= %(k)d AND x.range <= a.range AND y.range <= b.range
),
group_level AS (
    SELECT c.* EXCLUDE (ranking), c.ranking[g.gi] AS better, c.ranking[g.gj] AS worse,
           g.gj - g.gi AS rank_gap
    FROM cur c JOIN group_pairs g ON g.n = len(c.ranking)
),
label_pairs AS (
    SELECT p.label_id, p.task_id, p.prompt_id, p.round, p.annotator, p.source, p.judge,
           p.principle, p.better[m.ia] AS chosen_id, p.worse[m.ib] AS rejected_id, p.rank_gap,
           p.margin_level, p.margin, p.soft_prob,
           list_position(p.shown_order, p.better[m.ia]) AS chosen_shown_at,
           list_position(p.shown_order, p.worse[m.ib]) AS rejected_shown_at
    FROM group_level p JOIN member_pairs m ON m.na = len(p.better) AND m.nb = len(p.worse)
)
""" % {"k": MAX_K}

LABEL_PAIR_COLUMNS = ("label_id", "task_id", "prompt_id", "round", "annotator", "source", "judge",
                      "principle", "chosen_id", "rejected_id", "rank_gap", "margin_level", "margin",
                      "soft_prob", "chosen_shown_at", "rejected_shown_at")


def _label_pairs_sql(where: str, columns: Sequence[str] = LABEL_PAIR_COLUMNS) -> str:
    """The CTEs up to ``label_pairs``. Tasks and margin levels are joined only when a column
    asked for (or the round filter) needs them: the join with tasks is about a third of the
    expansion's time, and a label's task always exists (the store checks it on insert)."""
    task = "t." in where or bool({"prompt_id", "round"} & set(columns))
    margin = "margin" in columns
    return _LABEL_PAIRS.format(
        where=where,
        task_columns=", t.prompt_id, t.round" if task else
        ", NULL::VARCHAR AS prompt_id, NULL::INTEGER AS round",
        task_join=" JOIN tasks t ON t.id = l.task_id" if task else "",
        margin_column=", coalesce(m.value, 0.0) AS margin" if margin else ", NULL::DOUBLE AS margin",
        margin_join=" LEFT JOIN margin_levels m ON m.level = l.margin_level" if margin else "")

_AGGREGATE = """,
oriented AS (
    SELECT *, least(chosen_id, rejected_id) AS lo, greatest(chosen_id, rejected_id) AS hi,
           chosen_id < rejected_id AS lo_wins,
           CASE WHEN chosen_id < rejected_id THEN soft_prob ELSE 1 - soft_prob END AS p_lo
    FROM label_pairs
),
agg AS (
    SELECT task_id, lo, hi, any_value(prompt_id) AS prompt_id, any_value(round) AS round,
           count(*) FILTER (WHERE lo_wins) AS v_lo,
           count(*) FILTER (WHERE NOT lo_wins) AS v_hi,
           avg(margin) FILTER (WHERE lo_wins) AS m_lo,
           avg(margin) FILTER (WHERE NOT lo_wins) AS m_hi,
           mode(margin_level ORDER BY margin DESC) FILTER (WHERE lo_wins) AS l_lo,
           mode(margin_level ORDER BY margin DESC) FILTER (WHERE NOT lo_wins) AS l_hi,
           avg(p_lo) AS p_lo,
           avg(rank_gap) AS rank_gap,
           list(DISTINCT label_id ORDER BY label_id) AS label_ids
    FROM oriented GROUP BY task_id, lo, hi
),
n AS (
    SELECT task_id, count(*) AS n_labels, string_agg(DISTINCT source, '+' ORDER BY source) AS source
    FROM cur GROUP BY task_id
),
pairs AS (
    SELECT agg.task_id, agg.prompt_id, agg.round,
           CASE WHEN v_lo > v_hi THEN lo ELSE hi END AS chosen_id,
           CASE WHEN v_lo > v_hi THEN hi ELSE lo END AS rejected_id,
           greatest(v_lo, v_hi) AS votes_chosen, least(v_lo, v_hi) AS votes_rejected,
           n.n_labels, greatest(v_lo, v_hi) / n.n_labels AS agreement,
           CASE WHEN v_lo > v_hi THEN m_lo ELSE m_hi END AS margin,
           CASE WHEN v_lo > v_hi THEN l_lo ELSE l_hi END AS margin_level,
           CASE WHEN v_lo > v_hi THEN p_lo ELSE 1 - p_lo END AS soft_prob,
           rank_gap, n.source, label_ids
    FROM agg JOIN n USING (task_id)
    WHERE v_lo <> v_hi
)
"""

_WITH_TEXT = """
SELECT p.task_id, p.prompt_id, pr.messages AS prompt, c.text AS chosen, r.text AS rejected,
       p.margin, p.margin_level, p.soft_prob, p.source, p.votes_chosen, p.votes_rejected,
       p.n_labels, p.agreement, p.round, p.rank_gap, p.chosen_id, p.rejected_id, p.label_ids
FROM pairs p
JOIN prompts pr ON pr.id = p.prompt_id
JOIN responses c ON c.id = p.chosen_id
JOIN responses r ON r.id = p.rejected_id
{having}
ORDER BY p.task_id, p.chosen_id, p.rejected_id
"""


def _filters(source: str, rounds: Sequence[int] | None, judge: str | None,
             principle: str | None, annotator: str | None) -> tuple[str, list]:
    where, params = [], []
    if source not in ("human", "ai", "both"):
        raise StoreError(f"source must be human, ai or both, not {source!r}")
    if source != "both":
        where.append("l.source = ?")
        params.append(source)
    if rounds is not None:
        where.append("list_contains(?, t.round)")
        params.append(list(rounds))
    if judge is not None:
        where.append("l.judge = ?")
        params.append(judge)
    if principle is not None:
        where.append("l.principle = ?")
        params.append(principle)
    if annotator is not None:
        where.append("l.annotator = ?")
        params.append(annotator)
    return "".join(" AND " + w for w in where), params


def label_pairs(db: Store, source: str = "both", rounds: Sequence[int] | None = None,
                judge: str | None = None, principle: str | None = None,
                annotator: str | None = None) -> list[dict]:
    """Every ordered pair of every current label, before aggregation (with shown positions)."""
    where, params = _filters(source, rounds, judge, principle, annotator)
    sql = _label_pairs_sql(where) + "SELECT * FROM label_pairs ORDER BY label_id, chosen_id, rejected_id"
    return db.query(sql, params)


def label_pairs_table(db: Store, source: str = "both", rounds: Sequence[int] | None = None,
                      judge: str | None = None, principle: str | None = None,
                      annotator: str | None = None, columns: Sequence[str] | None = None):
    """``label_pairs`` as a pyarrow Table (all of LABEL_PAIR_COLUMNS, or the ones asked for),
    for bulk consumers: no Python object per pair."""
    columns = list(columns or LABEL_PAIR_COLUMNS)
    unknown = [c for c in columns if c not in LABEL_PAIR_COLUMNS]
    if unknown:
        raise StoreError(f"label pairs have no column {unknown[0]!r}")
    where, params = _filters(source, rounds, judge, principle, annotator)
    sql = _label_pairs_sql(where, columns) + f"SELECT {', '.join(columns)} FROM label_pairs"
    return db.cursor().sql(sql, params=params).to_arrow_table()


def pairs_table(db: Store, source: str = "both", rounds: Sequence[int] | None = None,
                judge: str | None = None, principle: str | None = None,
                min_agreement: float | None = None):
    """``pairs`` as a pyarrow Table (same columns, ``prompt`` as messages JSON text)."""
    sql, params = pairs_sql(source, rounds, judge, principle, min_agreement)
    return db.cursor().sql(sql, params=params).to_arrow_table()


def pairs_sql(source: str = "both", rounds: Sequence[int] | None = None,
              judge: str | None = None, principle: str | None = None,
              min_agreement: float | None = None) -> tuple[str, list]:
    where, params = _filters(source, rounds, judge, principle, None)
    having = ""
    if min_agreement is not None:
        having = "WHERE p.agreement >= ?"
        params = params + [float(min_agreement)]
    return _label_pairs_sql(where) + _AGGREGATE + _WITH_TEXT.format(having=having), params


def pairs(db: Store, source: str = "both", rounds: Sequence[int] | None = None,
          judge: str | None = None, principle: str | None = None,
          min_agreement: float | None = None) -> list[dict]:
    """Aggregated training pairs with texts: prompt (messages JSON), chosen, rejected, margin…"""
    sql, params = pairs_sql(source, rounds, judge, principle, min_agreement)
    return db.query(sql, params)


def rankings(db: Store, source: str = "both", rounds: Sequence[int] | None = None,
             judge: str | None = None, principle: str | None = None,
             kind: str | None = "ranking") -> list[dict]:
    """Current labels of K-way tasks, one row each: prompt, response_ids, texts, ranking.

    ``kind="ranking"`` (default) keeps only K-way tasks, whose labels a ranking loss uses
    whole; ``kind=None`` returns every label (the ``rankings`` export).
    """
    where, params = _filters(source, rounds, judge, principle, None)
    if kind is not None:
        where += " AND t.kind = ?"
        params.append(kind)
    sql = f"""
        SELECT l.id AS label_id, l.task_id, t.kind, t.round, p.messages AS prompt,
               t.response_ids,
               (SELECT list(r.text ORDER BY list_position(t.response_ids, r.id))
                  FROM responses r WHERE list_contains(t.response_ids, r.id)) AS texts,
               l.ranking, l.annotator, l.source, l.judge, l.margin_level, l.soft_prob,
               l.rationale, l.principle, l.created_at
        FROM labels l JOIN tasks t ON t.id = l.task_id JOIN prompts p ON p.id = t.prompt_id
        WHERE l.superseded_by IS NULL {where}
        ORDER BY l.task_id, l.annotator"""
    return db.query(sql, params)
