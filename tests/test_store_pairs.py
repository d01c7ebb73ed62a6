"""Rankings → pairs in SQL, checked against expectations computed by hand.

Task T ranks four responses a, b, c, d; three annotators:

    alice  [[a], [b, c], [d]]     → a>b a>c a>d b>d c>d          (b, c tied: no pair)
    bob    [[b], [a], [c, d]]     → b>a b>c b>d a>c a>d          (c, d tied)
    carol  [[a], [b], [c], [d]]   → a>b a>c a>d b>c b>d c>d

    pair   votes (winner-loser)  n_labels  agreement
    a,b    a 2-1                 3         2/3
    a,c    a 3-0                 3         1
    a,d    a 3-0                 3         1
    b,c    b 2-0 (alice tied)    3         2/3
    b,d    b 3-0                 3         1
    c,d    c 2-0 (bob tied)      3         2/3
"""
import pytest

from annotate import store

LEVELS = {"significantly": 1.0, "better": 2 / 3, "slightly": 1 / 3, "negligibly": 0.0}


def make_task(db, prompt: str, texts: list[str], kind=None) -> tuple[dict, list[str]]:
    p = store.prompt_row(prompt)
    rs = [store.response_row(p["id"], t) for t in texts]
    store.add_prompts(db, [p])
    store.add_responses(db, rs)
    t = store.task_row(p["id"], [r["id"] for r in rs], kind=kind)
    store.add_tasks(db, [t])
    return t, [r["id"] for r in rs]


def label(db, task, annotator, ranking, **kw) -> dict:
    row = store.label_row(task, annotator, ranking, levels=store.margin_levels(db), **kw)
    store.add_labels(db, [row])
    return row


@pytest.fixture
def ranked(db):
    task, (a, b, c, d) = make_task(db, "rank these", ["A", "B", "C", "D"])
    label(db, task, "alice", [[a], [b, c], [d]])
    label(db, task, "bob", [[b], [a], [c, d]])
    label(db, task, "carol", [[a], [b], [c], [d]])
    return db, task, dict(a=a, b=b, c=c, d=d)


def by_texts(rows):
    return {(r["chosen"], r["rejected"]): r for r in rows}


def test_each_label_expands_to_its_ordered_pairs_and_ties_give_none(ranked):
    db, task, ids = ranked
    name = {v: k for k, v in ids.items()}
    per_label = {}
    for r in store.label_pairs(db):
        per_label.setdefault(r["annotator"], set()).add(name[r["chosen_id"]] + name[r["rejected_id"]])
    assert per_label == {
        "alice": {"ab", "ac", "ad", "bd", "cd"},
        "bob": {"ba", "bc", "bd", "ac", "ad"},
        "carol": {"ab", "ac", "ad", "bc", "bd", "cd"},
    }
    gaps = {(r["annotator"], name[r["chosen_id"]] + name[r["rejected_id"]]): r["rank_gap"]
            for r in store.label_pairs(db)}
    assert gaps[("alice", "ad")] == 2 and gaps[("carol", "ad")] == 3 and gaps[("bob", "ba")] == 1


def test_votes_majority_and_agreement_match_hand_computation(ranked):
    db, _, _ = ranked
    got = {(r["chosen"], r["rejected"]): (r["votes_chosen"], r["votes_rejected"], r["n_labels"],
                                          round(r["agreement"], 6))
           for r in store.pairs(db)}
    assert got == {
        ("A", "B"): (2, 1, 3, round(2 / 3, 6)),
        ("A", "C"): (3, 0, 3, 1.0),
        ("A", "D"): (3, 0, 3, 1.0),
        ("B", "C"): (2, 0, 3, round(2 / 3, 6)),
        ("B", "D"): (3, 0, 3, 1.0),
        ("C", "D"): (2, 0, 3, round(2 / 3, 6)),
    }
    pairs = by_texts(store.pairs(db))
    assert all(r["source"] == "human" and r["margin"] == 0.0 for r in pairs.values())
    assert len(pairs[("A", "B")]["label_ids"]) == 3


def test_min_agreement_filters_pairs(ranked):
    db, _, _ = ranked
    kept = {(r["chosen"], r["rejected"]) for r in store.pairs(db, min_agreement=0.9)}
    assert kept == {("A", "C"), ("A", "D"), ("B", "D")}


def test_edits_and_retractions_change_the_pairs_but_keep_every_row(ranked):
    db, task, ids = ranked
    a, b, c, d = (ids[k] for k in "abcd")
    old = store.current_label(db, task["id"], "bob")
    new = store.label_row(task, "bob", [[a], [b], [c], [d]])
    store.supersede_label(db, old["id"], new)          # bob now agrees with carol
    carol = store.current_label(db, task["id"], "carol")
    store.retract_label(db, carol["id"])               # carol undoes hers
    pairs = by_texts(store.pairs(db))
    assert (pairs[("A", "B")]["votes_chosen"], pairs[("A", "B")]["n_labels"]) == (2, 2)
    assert pairs[("B", "C")]["votes_chosen"] == 1 and pairs[("B", "C")]["agreement"] == 0.5
    assert db.scalar("SELECT count(*) FROM labels") == 4   # nothing deleted
    history = store.label_history(db)
    assert sum(h["superseded_by"] is not None for h in history) == 2


def test_pairwise_margins_ties_and_split_votes(db):
    task, (x, y) = make_task(db, "which is better?", ["X", "Y"])
    label(db, task, "alice", [[x], [y]], margin_level="better")
    label(db, task, "bob", [[x], [y]], margin_level="better")
    label(db, task, "erin", [[x], [y]], margin_level="significantly")
    label(db, task, "carol", [[y], [x]], margin_level="slightly")
    label(db, task, "dave", [[x, y]], margin_level="significantly")   # a tie has no margin
    assert store.current_label(db, task["id"], "dave")["margin_level"] is None
    (pair,) = store.pairs(db)
    assert (pair["chosen"], pair["rejected"]) == ("X", "Y")
    assert (pair["votes_chosen"], pair["votes_rejected"], pair["n_labels"]) == (3, 1, 5)
    assert pair["agreement"] == pytest.approx(3 / 5)
    assert pair["margin"] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)   # mean over the majority
    assert pair["margin_level"] == "better"

    split, (u, v) = make_task(db, "a split vote", ["U", "V"])
    label(db, split, "alice", [[u], [v]])
    label(db, split, "bob", [[v], [u]])
    assert all(p["task_id"] != split["id"] for p in store.pairs(db))   # no majority, no pair


def test_soft_prob_is_averaged_in_the_majority_direction_and_sources_combine(db):
    task, (x, y) = make_task(db, "judge me", ["X", "Y"])
    label(db, task, "judge-1", [[x], [y]], source="ai", soft_prob=0.8, judge="local:tiny")
    label(db, task, "judge-2", [[y], [x]], source="ai", soft_prob=0.3, judge="local:tiny")
    label(db, task, "judge-3", [[x], [y]], source="ai", soft_prob=0.6, judge="local:tiny")
    (pair,) = store.pairs(db)
    assert pair["chosen"] == "X" and pair["source"] == "ai"
    # p(X preferred): 0.8, 1 - 0.3, 0.6
    assert pair["soft_prob"] == pytest.approx((0.8 + 0.7 + 0.6) / 3)
    label(db, task, "alice", [[x], [y]])
    (pair,) = store.pairs(db)
    assert pair["source"] == "ai+human" and pair["n_labels"] == 4
    assert store.pairs(db, source="human")[0]["n_labels"] == 1


def test_a_second_current_label_by_the_same_annotator_is_refused(ranked):
    db, task, ids = ranked
    before = db.scalar("SELECT count(*) FROM labels")
    with pytest.raises(store.StoreError, match="already has a label by 'alice'"):
        label(db, task, "alice", [[ids["d"]], [ids["c"]], [ids["b"]], [ids["a"]]])
    assert db.scalar("SELECT count(*) FROM labels") == before


def test_rankings_returns_current_k_way_labels(ranked):
    db, task, ids = ranked
    rows = store.rankings(db)
    assert [r["annotator"] for r in rows] == ["alice", "bob", "carol"]
    assert list(rows[0]["texts"]) == ["A", "B", "C", "D"]
    assert [list(g) for g in rows[0]["ranking"]] == [[ids["a"]], [ids["b"], ids["c"]], [ids["d"]]]


def _compositions(k: int):
    """Every way to cut k ranked responses into tie groups (2**(k-1) shapes)."""
    for cuts in range(2 ** (k - 1)):
        sizes, size = [], 1
        for pos in range(k - 1):
            if cuts >> pos & 1:
                sizes.append(size)
                size = 1
            else:
                size += 1
        yield sizes + [size]


def test_every_tie_structure_up_to_nine_responses_expands_like_the_definition(db):
    """All 2**(K-1) tie structures of K = 2..9 (510 labels): the SQL gives exactly the pairs
    of responses in different groups, earlier group chosen, with the right group gap."""
    expected, labels, tasks = set(), [], {}
    for k in range(2, 10):
        task, ids = make_task(db, f"rank {k}", [f"r{j}" for j in range(k)])
        for n, sizes in enumerate(_compositions(k)):
            order = ids[n % k:] + ids[:n % k]   # vary which response sits where
            groups, start = [], 0
            for s in sizes:
                groups.append(order[start:start + s])
                start += s
            labels.append(store.label_row(task, f"a{n}", groups))
            for gi, better in enumerate(groups):
                for gj in range(gi + 1, len(groups)):
                    expected |= {(f"a{n}", task["id"], x, y, gj - gi) for x in better for y in groups[gj]}
    store.add_labels(db, labels)
    got = [(r["annotator"], r["task_id"], r["chosen_id"], r["rejected_id"], r["rank_gap"])
           for r in store.label_pairs(db)]
    assert len(got) == len(set(got)) and set(got) == expected
    # a subset of columns (no task or margin join) gives the same rows
    lean = store.label_pairs_table(db, columns=["label_id", "chosen_id", "rejected_id", "rank_gap"])
    full = {(r["label_id"], r["chosen_id"], r["rejected_id"], r["rank_gap"])
            for r in store.label_pairs_table(db).to_pylist()}
    assert lean.num_rows == len(full) and set(map(tuple, map(dict.values, lean.to_pylist()))) == full


def test_task_columns_and_round_filter_still_apply_with_a_column_subset(db):
    t1, _ = make_task(db, "one", ["x", "y"])
    p = store.prompt_row("two")
    rs = [store.response_row(p["id"], t) for t in ("u", "v")]
    t2 = store.task_row(p["id"], [r["id"] for r in rs], round=1)
    store.write_batch(db, prompts=[p], responses=rs, tasks=[t2])
    label(db, t1, "ann", [[t1["response_ids"][0]], [t1["response_ids"][1]]])
    label(db, t2, "ann", [[t2["response_ids"][1]], [t2["response_ids"][0]]])
    got = store.label_pairs_table(db, rounds=[1], columns=["task_id", "round", "prompt_id"]).to_pylist()
    assert got == [{"task_id": t2["id"], "round": 1, "prompt_id": p["id"]}]
    assert store.label_pairs_table(db, rounds=[0], columns=["chosen_id"]).to_pylist() == [
        {"chosen_id": t1["response_ids"][0]}]


def test_aggregates_are_deterministic_label_ids_sorted_and_level_ties_go_to_the_stronger(db):
    task, (a, b) = make_task(db, "pick", ["A", "B"])
    for name, level in (("zed", "slightly"), ("amy", "significantly"), ("kim", "better"),
                        ("bo", "significantly"), ("al", "slightly")):
        label(db, task, name, [[a], [b]], margin_level=level)
    (pair,) = store.pairs(db)
    assert pair["margin_level"] == "significantly"      # 2 significantly, 2 slightly: the stronger
    ids = list(pair["label_ids"])
    assert ids == sorted(ids) and len(ids) == 5
