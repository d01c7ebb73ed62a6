"""Agreement statistics against textbook values, then over labels in a real store."""
import pytest

from annotate import agreement, store
from annotation_data import seed_tasks


def test_cohen_kappa_textbook():
    # 50 items: both yes 20, yes/no 5, no/yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)
    assert agreement.cohen_kappa(a, a) == pytest.approx(1.0)
    assert agreement.cohen_kappa(["x"] * 4, ["x"] * 4) == 1.0  # degenerate: perfect
    with pytest.raises(ValueError, match="equally long"):
        agreement.cohen_kappa(["a"], ["a", "b"])


def test_krippendorff_alpha_textbook():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units
    # with missing values, nominal alpha = 0.743
    units = [[1, 1, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
             [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [5, 5, 5], [1, 1], [3]]
    assert agreement.krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert agreement.krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # one category only
    assert agreement.krippendorff_alpha([["a", "b"], ["b", "a"]]) < 0  # systematic disagreement


def test_directions_of_a_ranking_with_ties():
    d = agreement.directions([["c"], ["a", "d"], ["b"]])
    assert d == {("a", "b"): "first", ("a", "c"): "second", ("a", "d"): "tie",
                 ("b", "c"): "second", ("b", "d"): "second", ("c", "d"): "first"}


def _label(db, annotator, task_id, ranking, given):
    task = store.get_task(db, task_id)
    row = store.label_row(task, annotator, ranking,
                          margin_level="better" if len(ranking) == 2 else None,
                          shown_order=store.shown_order(task_id, annotator, task["response_ids"]),
                          duration_ms=30_000)
    store.add_labels(db, [row])
    given.setdefault(task_id, []).append(ranking)


def test_report_over_the_store(db):
    tids = seed_tasks(db, pairwise=3, required=3)
    resp = {t: store.get_task(db, t)["response_ids"] for t in tids}
    given = {}
    # task 0: all three agree; task 1: carol disagrees; task 2: carol ties
    for name in ("alice", "bob", "carol"):
        _label(db, name, tids[0], [[resp[tids[0]][0]], [resp[tids[0]][1]]], given)
    for name in ("alice", "bob"):
        _label(db, name, tids[1], [[resp[tids[1]][0]], [resp[tids[1]][1]]], given)
        _label(db, name, tids[2], [[resp[tids[2]][1]], [resp[tids[2]][0]]], given)
    _label(db, "carol", tids[1], [[resp[tids[1]][1]], [resp[tids[1]][0]]], given)
    _label(db, "carol", tids[2], [resp[tids[2]]], given)

    rep = agreement.report(db)
    assert rep["labels"] == 9 and rep["annotators"] == 3 and rep["shared_units"] == 3
    by = {a["annotator"]: a for a in rep["per_annotator"]}
    assert by["alice"]["agreement_with_majority"] == pytest.approx(1.0)
    assert by["carol"]["agreement_with_majority"] == pytest.approx(1 / 3)
    assert by["alice"]["labels_per_hour"] == pytest.approx(120.0)  # 30 s per label
    assert by["alice"]["median_seconds_per_label"] == pytest.approx(30.0)
    tasks = {t["task_id"]: t["observed_agreement"] for t in rep["per_task"]}
    assert tasks[tids[0]] == pytest.approx(1.0) and tasks[tids[1]] == pytest.approx(1 / 3)
    units = [[next(iter(agreement.directions(r).values())) for r in given[t]] for t in tids]
    assert rep["alpha"] == pytest.approx(agreement.krippendorff_alpha(units))
    assert rep["alpha"] < 1


def test_position_bias_counts_first_shown_wins(db):
    tids = seed_tasks(db, pairwise=4, required=1)
    for t in tids:
        ids = store.get_task(db, t)["response_ids"]
        shown = store.shown_order(t, "lazy", ids)
        row = store.label_row(store.get_task(db, t), "lazy", [[shown[0]], [shown[1]]],
                              margin_level="slightly", shown_order=shown)
        store.add_labels(db, [row])
    bias = agreement.report(db)["position_bias"]
    assert bias["pairwise_labels"] == 4 and bias["first_shown_wins"] == 1.0
