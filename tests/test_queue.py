"""The task queue in a real DuckDB file: claims, overlap, skips, edits, concurrency."""
import threading

import pytest

from annotate import store
from annotation_data import label_counts, seed_tasks


def ranking_for(db, task_id, best_first=True):
    ids = store.get_task(db, task_id)["response_ids"]
    return [[rid] for rid in (ids if best_first else ids[::-1])]


def label_next(db, annotator, **kw):
    tid = store.next_task(db, annotator)
    assert tid is not None
    store.submit_label(db, annotator, tid, ranking_for(db, tid), margin_level="better", **kw)
    return tid


def test_next_task_is_stable_until_labelled_and_never_repeats(db):
    ids = seed_tasks(db, pairwise=3)
    first = store.next_task(db, "ann")
    assert first in ids
    assert store.next_task(db, "ann") == first  # a reload shows the same task
    store.submit_label(db, "ann", first, ranking_for(db, first), margin_level="slightly")
    seen = {first}
    while (tid := store.next_task(db, "ann")) is not None:
        assert tid not in seen
        store.submit_label(db, "ann", tid, ranking_for(db, tid), margin_level="better")
        seen.add(tid)
    assert seen == set(ids)
    assert store.queue_progress(db, "ann") == {"done_today": 3, "done_total": 3, "left": 0}


def test_overlap_two_with_three_annotators(db):
    ids = seed_tasks(db, pairwise=3, required=2)
    done = {name: [] for name in ("ann", "bob", "cid")}
    for _ in range(10):
        for name in done:
            tid = store.next_task(db, name)
            if tid is not None:
                store.submit_label(db, name, tid, ranking_for(db, tid), margin_level="better")
                done[name].append(tid)
    per_task = {r["task_id"]: r["n"] for r in db.query(
        "SELECT task_id, count(*) AS n FROM labels WHERE superseded_by IS NULL GROUP BY task_id")}
    assert per_task == {tid: 2 for tid in ids}  # every task exactly its overlap, no more
    assert all(len(set(v)) == len(v) for v in done.values())  # nobody labels a task twice
    assert sorted(len(v) for v in done.values()) == [2, 2, 2]  # work spread evenly


def test_last_slot_is_not_handed_to_two_annotators(db):
    [tid] = seed_tasks(db, pairwise=1, required=1)
    assert store.next_task(db, "ann") == tid
    assert store.next_task(db, "bob") is None  # ann holds the only slot
    store.skip_task(db, "ann", tid)
    assert store.next_task(db, "bob") == tid  # released by the skip


def test_expired_claim_frees_the_slot(db):
    [tid] = seed_tasks(db, pairwise=1, required=1)
    assert store.next_task(db, "ann") == tid
    assert store.next_task(db, "bob", lease_s=0) == tid  # ann's lease has run out


def test_concurrent_next_task_never_oversubscribes(db):
    ids = seed_tasks(db, pairwise=4, required=2)
    got, errors = {}, []

    def grab(name):
        try:
            got[name] = store.next_task(db, name)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=grab, args=(f"u{i}",)) for i in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    handed = [tid for tid in got.values() if tid is not None]
    assert len(handed) == 8  # 4 tasks x 2 slots, the other 4 annotators get nothing
    assert all(handed.count(tid) == 2 for tid in ids)


def test_skip_comes_back_last(db):
    ids = seed_tasks(db, pairwise=3)
    first = store.next_task(db, "ann")
    store.skip_task(db, "ann", first)
    order = []
    while (tid := store.next_task(db, "ann")) is not None:
        order.append(tid)
        store.submit_label(db, "ann", tid, ranking_for(db, tid), margin_level="better")
    assert order[-1] == first and sorted(order) == sorted(ids)
    assert db.scalar("SELECT count(*) FROM skips") == 0  # labelling clears the skip


def test_submit_twice_supersedes_and_keeps_history(db):
    [tid] = seed_tasks(db, pairwise=1)
    assert store.next_task(db, "ann") == tid
    first = store.submit_label(db, "ann", tid, ranking_for(db, tid), margin_level="better")
    second = store.submit_label(db, "ann", tid, ranking_for(db, tid, best_first=False),
                                margin_level="significantly", rationale="changed my mind")
    assert second["superseded"] == first["label_id"]
    counts = label_counts(db)
    assert counts == {"rows": 2, "current": 1, "max_per_annotator": 1}
    old = db.query("SELECT superseded_by FROM labels WHERE id = ?", [first["label_id"]])[0]
    assert old["superseded_by"] == second["label_id"]
    cur = store.current_label(db, tid, "ann")
    assert cur["margin_level"] == "significantly" and cur["rationale"] == "changed my mind"


def test_undo_returns_task_to_the_queue(db):
    [tid] = seed_tasks(db, pairwise=1)
    label_next(db, "ann")
    assert store.next_task(db, "ann") is None
    last = store.my_labels(db, "ann", limit=1)[0]
    store.retract_label(db, last["label_id"], annotator="ann")
    assert store.next_task(db, "ann") == tid
    assert label_counts(db)["current"] == 0 and label_counts(db)["rows"] == 1


def test_shown_order_is_stored_and_stable_per_annotator(db):
    [tid] = seed_tasks(db, pairwise=0, ranking=1, k=6)
    ids = store.get_task(db, tid)["response_ids"]
    order = store.shown_order(tid, "ann", ids)
    assert sorted(order) == sorted(ids) and order == store.shown_order(tid, "ann", ids)
    orders = {tuple(store.shown_order(tid, f"u{i}", ids)) for i in range(20)}
    assert len(orders) > 1  # shuffled per annotator
    store.next_task(db, "ann")
    store.submit_label(db, "ann", tid, [[ids[0], ids[1]], [ids[2]], ids[3:]])
    row = store.current_label(db, tid, "ann")
    assert list(row["shown_order"]) == order
    assert row["duration_ms"] is not None and row["duration_ms"] >= 0
    assert [list(g) for g in row["ranking"]] == [[ids[0], ids[1]], [ids[2]], ids[3:]]


@pytest.mark.parametrize("mutate, message", [
    (lambda ids: [[ids[0]], ["nope"]], "not part of this task"),
    (lambda ids: [[ids[0]], [ids[0]]], "appears twice"),
    (lambda ids: [[ids[0]]], "leaves out response"),
    (lambda ids: "not a list", "non-empty list"),
])
def test_bad_rankings_are_refused_and_change_nothing(db, mutate, message):
    [tid] = seed_tasks(db, pairwise=1)
    store.next_task(db, "ann")
    ids = store.get_task(db, tid)["response_ids"]
    with pytest.raises(store.StoreError, match=message):
        store.submit_label(db, "ann", tid, mutate(ids), margin_level="better")
    assert label_counts(db)["rows"] == 0
    assert len(store.open_claims(db)) == 1  # the claim survives a bad submit


def test_task_not_handed_out_or_unknown_is_refused(db):
    a, b = seed_tasks(db, pairwise=2)
    handed = store.next_task(db, "ann")
    other = b if handed == a else a
    with pytest.raises(store.StoreError, match="not handed to"):
        store.submit_label(db, "ann", other, ranking_for(db, other), margin_level="better")
    with pytest.raises(store.StoreError, match="unknown task"):
        store.submit_label(db, "ann", "no-such-task", [["x"], ["y"]])
    with pytest.raises(store.StoreError, match="margin must be one of"):
        store.submit_label(db, "ann", handed, ranking_for(db, handed), margin_level="huge")
    assert label_counts(db)["rows"] == 0


def test_my_labels_shows_only_mine(db):
    seed_tasks(db, pairwise=2, required=2)
    label_next(db, "ann")
    label_next(db, "bob")
    mine = store.my_labels(db, "ann")
    assert len(mine) == 1 and {r["label_id"] for r in mine} <= {
        r["id"] for r in db.query("SELECT id FROM labels WHERE annotator = 'ann'")}
