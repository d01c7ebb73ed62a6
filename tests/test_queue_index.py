"""The queue's in-memory index and group commit: races, reloads, restarts, a killed server.

The index (annotate/store/queue_index.py, written by queue_writer.py) answers next_task from memory and commits labels in
groups, so these tests check the guarantees under many threads, against the database file
as the truth: no slot handed out twice, progress counts equal a count from scratch, a
change made behind the index's back is seen, claims outlive a restart, and a label
acknowledged over HTTP is in the file even after the server is killed with SIGKILL.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from annotate import store
from annotation_data import seed_tasks
import studio_server

ROOT = Path(__file__).resolve().parent.parent


def ranking(db, task_id):
    return [[rid] for rid in store.get_task(db, task_id)["response_ids"]]


def current_per_task(db) -> dict[str, int]:
    return {r["task_id"]: r["n"] for r in db.query(
        "SELECT task_id, count(*) AS n FROM labels WHERE superseded_by IS NULL "
        "AND source = 'human' GROUP BY task_id")}


def test_many_threads_racing_for_the_last_slots(db):
    """40 annotators label 30 tasks with overlap 2 as fast as they can: every task ends with
    exactly 2 labels, nobody labels a task twice, nobody is refused a task it was handed."""
    ids = seed_tasks(db, pairwise=30, required=2)
    done: dict[str, list[str]] = {}
    errors = []
    start = threading.Barrier(40)

    def annotate(name):
        try:
            start.wait()
            mine = done.setdefault(name, [])
            while (tid := store.next_task(db, name)) is not None:
                store.submit_label(db, name, tid, ranking(db, tid), margin_level="better")
                mine.append(tid)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=annotate, args=(f"u{i}",)) for i in range(40)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert current_per_task(db) == {tid: 2 for tid in ids}
    assert all(len(set(v)) == len(v) for v in done.values())
    assert sum(len(v) for v in done.values()) == 60


def test_one_last_slot_many_callers_many_rounds(db):
    """Again and again, 16 threads ask at once for a single open slot: exactly one gets it."""
    ids = seed_tasks(db, pairwise=8, required=1)
    for round_ in range(8):
        got = []
        start = threading.Barrier(16)

        def grab(name):
            start.wait()
            got.append((name, store.next_task(db, name)))

        threads = [threading.Thread(target=grab, args=(f"r{round_}u{i}",)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        winners = [(n, t) for n, t in got if t is not None]
        assert len(winners) == 8 - round_  # one per task still open, never two on a task
        assert len({t for _, t in winners}) == len(winners)
        name, tid = winners[0]
        store.submit_label(db, name, tid, ranking(db, tid), margin_level="better")
        for other, theirs in winners[1:]:     # the others give their slots back (skip)
            store.skip_task(db, other, theirs)
    assert sum(current_per_task(db).values()) == 8 and set(current_per_task(db)) == set(ids)


def brute_force_progress(db, annotator: str) -> dict:
    """progress() computed from scratch: the database's labels and the index's live claims."""
    labels = db.query("SELECT task_id, annotator, created_at FROM labels "
                      "WHERE superseded_by IS NULL AND source = 'human'")
    required = {r["id"]: r["required_labels"] for r in db.query("SELECT id, required_labels FROM tasks")}
    live = [c for c in store.open_claims(db) if c["live"] and c["annotator"] != annotator]
    left = 0
    for t, need in required.items():
        mine = any(r["task_id"] == t and r["annotator"] == annotator for r in labels)
        taken = sum(r["task_id"] == t for r in labels) + sum(c["task_id"] == t for c in live)
        left += not mine and taken < need
    today = time.strftime("%Y-%m-%d")
    return {"done_today": sum(r["annotator"] == annotator and str(r["created_at"])[:10] == today
                              for r in labels),
            "done_total": sum(r["annotator"] == annotator for r in labels), "left": left}


def open_to(db, annotator: str, task_id: str) -> bool:
    """From scratch: no current label of mine, and labels + others' live claims < overlap.
    (A claim whose lease ran out may still be submitted late, so a live claim's task can fill.)"""
    need = db.scalar("SELECT required_labels FROM tasks WHERE id = ?", [task_id])
    labels = db.query("SELECT annotator FROM labels WHERE task_id = ? AND superseded_by IS NULL "
                      "AND source = 'human'", [task_id])
    live = [c for c in store.open_claims(db)
            if c["live"] and c["task_id"] == task_id and c["annotator"] != annotator]
    return annotator not in {r["annotator"] for r in labels} and len(labels) + len(live) < need


def taken_by_others(db, name) -> dict[str, int]:
    """task -> current human labels + live claims of annotators other than ``name``."""
    taken = {t: n for t, n in current_per_task(db).items()}
    for c in store.open_claims(db):
        if c["live"] and c["annotator"] != name:
            taken[c["task_id"]] = taken.get(c["task_id"], 0) + 1
    return taken


def assert_fewest_first(db, name, tid, step):
    """A task handed out fresh (not held, not a skipped one coming back) has no more labels +
    claims of others than any other task open to ``name``: work spreads evenly."""
    required = {r["id"]: r["required_labels"] for r in db.query("SELECT id, required_labels FROM tasks")}
    mine = {r["task_id"] for r in db.query("SELECT task_id FROM labels WHERE annotator = ? AND "
                                           "superseded_by IS NULL AND source = 'human'", [name])}
    skipped = {r["task_id"] for r in db.query("SELECT task_id FROM skips WHERE annotator = ?", [name])}
    taken = taken_by_others(db, name)
    open_to_me = [t for t in required if t not in mine and t not in skipped
                  and taken.get(t, 0) < required[t]]
    assert taken.get(tid, 0) == min(taken.get(t, 0) for t in open_to_me), step


def test_progress_counts_match_a_count_from_scratch(db):
    """A random mix of every queue action by 5 annotators on 12 tasks of overlap 1-3; after
    each step every annotator's progress equals the count from scratch, and the order of
    service holds (the held task first, nothing labelled twice, no task over its overlap)."""
    ids = seed_tasks(db, pairwise=8, ranking=4, k=3)
    rng = random.Random(7)
    for tid in ids:
        store.set_required_labels(db, rng.choice([1, 2, 3]), [tid])
    names = ["ann", "bob", "cid", "dan", "eve"]
    held: dict[str, str | None] = {}
    for step in range(160):
        name = rng.choice(names)
        action = rng.random()
        if action < 0.45 or held.get(name) is None:
            lease = 0 if rng.random() < 0.05 else store.LEASE_S   # now and then: leases run out
            claim = next((c for c in store.open_claims(db) if c["annotator"] == name), None)
            still_open = claim is not None and open_to(db, name, claim["task_id"])
            tid = store.next_task(db, name, lease_s=lease)
            if lease and claim is not None and claim["live"] and still_open:
                assert tid == claim["task_id"], step   # a live claim is shown again
            elif tid is not None and not db.scalar("SELECT count(*) FROM skips WHERE annotator = ? "
                                                    "AND task_id = ?", [name, tid]):
                assert_fewest_first(db, name, tid, step)
            held[name] = tid
        elif action < 0.75:
            store.submit_label(db, name, held[name], ranking(db, held[name]))
            held[name] = None
        elif action < 0.85:
            store.skip_task(db, name, held[name])
            held[name] = None
        elif action < 0.90:
            mine = store.my_labels(db, name, limit=5)
            if mine:  # edit one of my labels (a second submit supersedes)
                pick = rng.choice(mine)
                store.submit_label(db, name, pick["task_id"], ranking(db, pick["task_id"])[::-1])
        else:
            mine = store.my_labels(db, name, limit=1)
            if mine and rng.random() < 0.5:  # undo through the queue
                store.undo_label(db, name, mine[0]["label_id"])
            elif mine:  # undo behind the index's back: it must notice and reload
                store.retract_label(db, mine[0]["label_id"], annotator=name)
        for who in names:
            assert store.queue_progress(db, who) == brute_force_progress(db, who), (step, who)
        index = db.memo["queue"].index      # the tasks per count of labels + claims (pick skips empty counts)
        with index.lock:
            recount = Counter(index.labels[t] + index.live[t] for t in index.required)
            assert {k: n for k, n in index.by_taken.items() if n} == recount, step
        per_task = current_per_task(db)
        required = {r["id"]: r["required_labels"] for r in db.query("SELECT id, required_labels FROM tasks")}
        assert all(n <= required[t] for t, n in per_task.items()), step
    assert db.scalar("SELECT count(*) FROM labels WHERE superseded_by IS NULL "
                     "GROUP BY task_id, annotator ORDER BY 1 DESC LIMIT 1") == 1


def test_writes_behind_the_index_while_labels_are_waiting(db):
    """Imports and overlap changes committed while other threads submit: the index reloads
    with the labels still waiting for the writer, so none is forgotten or double-counted."""
    seed_tasks(db, pairwise=120, required=1)
    stop = threading.Event()
    errors = []

    def admin():
        n = 0
        while not stop.is_set():
            seed_tasks(db, pairwise=1, required=1, prefix=f"late {n} ")  # a new task appears
            n += 1

    def annotate(name):
        try:
            for _ in range(12):
                tid = store.next_task(db, name)
                if tid is None:
                    return
                store.submit_label(db, name, tid, ranking(db, tid), margin_level="slightly")
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    writer = threading.Thread(target=admin)
    writer.start()
    threads = [threading.Thread(target=annotate, args=(f"u{i}",)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stop.set()
    writer.join()
    assert not errors
    per_task = current_per_task(db)
    assert sum(per_task.values()) == 96 and max(per_task.values()) == 1
    total = db.scalar("SELECT count(*) FROM tasks")
    assert store.queue_progress(db, "u0")["left"] == total - 96 == brute_force_progress(db, "u0")["left"]


def test_claims_outlive_a_restart(tmp_path):
    """Claims live in memory and reach their table lazily; closing the store writes them, so
    after a restart the annotator is shown the same task and may submit it."""
    path = tmp_path / "queue.duckdb"
    with store.Store(path) as db:
        seed_tasks(db, pairwise=3)
        tid = store.next_task(db, "ann")
        other = store.next_task(db, "bob")
    with store.Store(path) as db:
        assert {(c["annotator"], c["task_id"]) for c in store.open_claims(db)} == {
            ("ann", tid), ("bob", other)}
        assert store.next_task(db, "ann") == tid            # a reload shows the same task
        assert store.next_task(db, "cid") not in (tid, other)
        out = store.submit_label(db, "ann", tid, ranking(db, tid), margin_level="better")
        assert out["task_id"] == tid
        assert store.current_label(db, tid, "ann")["duration_ms"] >= 0


def test_acknowledged_labels_survive_a_killed_server(tmp_path):
    """Annotators submit over HTTP to `prefstudio serve`; the server is killed with SIGKILL
    while they do. Every label the server acknowledged is in the database file."""
    workspace = tmp_path / "ws"
    db_path = workspace / "prefstudio.duckdb"
    names = [f"k{i}" for i in range(6)]
    with store.Store(db_path) as db:
        seed_tasks(db, pairwise=400)
        for name in names:
            store.add_user(db, name, "annotator", "kill-password")
    port = studio_server.free_port()
    env = {**os.environ, "PREFSTUDIO_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "serve", "--db", str(db_path),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "Running on local URL" in line:
                break
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        url = f"http://127.0.0.1:{port}/gradio_api/run/"
        acked: list[str] = []
        sessions = []
        for name in names:
            s = requests.Session()
            assert s.post(f"http://127.0.0.1:{port}/login",
                          data={"username": name, "password": "kill-password"}).status_code == 200
            sessions.append(s)

        def annotate(s):
            try:
                while True:
                    task = s.post(url + "next_task", json={"data": []}, timeout=30).json()["data"][0]
                    ids = [r["id"] for r in task["responses"]]
                    out = s.post(url + "submit_label", timeout=30, json={
                        "data": [task["id"], json.dumps([[i] for i in ids]), "better", ""]}).json()
                    acked.append(out["data"][0]["label_id"])
            except (requests.RequestException, KeyError, TypeError, ValueError):
                return  # the server is gone

        threads = [threading.Thread(target=annotate, args=(s,)) for s in sessions]
        [t.start() for t in threads]
        deadline = time.time() + 60
        while len(acked) < 40 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)   # mid-stream: no shutdown, no final flush
        proc.wait(timeout=30)
        [t.join(timeout=60) for t in threads]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 40
    with store.Store(db_path) as db:
        stored = {r[0] for r in db.cursor().execute("SELECT id FROM labels").fetchall()}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged labels lost"


def test_only_writes_to_the_queue_tables_make_the_index_reload(db):
    """A training job's progress (runs, metrics) and user changes leave the index as it is;
    new tasks are seen on the next call."""
    seed_tasks(db, pairwise=1)
    first = store.next_task(db, "ann")
    index = db.memo["queue"].index
    store.create_run(db, "run-1", "rm", {"lr": 1e-4})
    store.add_metrics(db, "run-1", [{"step": 1, "name": "loss", "value": 0.5}])
    store.add_user(db, "newcomer", "annotator", "newcomer-password")
    assert index.synced == db.queue_commits            # nothing to reload
    [late] = seed_tasks(db, pairwise=1, prefix="late ")
    assert index.synced != db.queue_commits            # an import: reload on the next call
    store.submit_label(db, "ann", first, ranking(db, first), margin_level="better")
    assert store.next_task(db, "ann") == late


def test_undo_through_the_queue(db):
    """Undo frees the slot at once (no reload), keeps the row, and refuses what is not mine."""
    [tid] = seed_tasks(db, pairwise=1)
    assert store.next_task(db, "ann") == tid
    out = store.submit_label(db, "ann", tid, ranking(db, tid), margin_level="better")
    assert store.next_task(db, "bob") is None
    synced = db.memo["queue"].index.synced
    with pytest.raises(store.StoreError, match="another annotator"):
        store.undo_label(db, "bob", out["label_id"])
    assert store.undo_label(db, "ann", out["label_id"]) == tid
    assert db.memo["queue"].index.synced == db.queue_commits != synced    # kept in step, no reload
    assert store.next_task(db, "bob") == tid                       # the slot is free again
    row = db.query("SELECT superseded_by FROM labels WHERE id = ?", [out["label_id"]])[0]
    assert row["superseded_by"].startswith("retracted:")
    with pytest.raises(store.StoreError, match="already replaced or undone"):
        store.undo_label(db, "ann", out["label_id"])
    assert store.queue_progress(db, "ann") == {"done_today": 0, "done_total": 0, "left": 0}


def test_a_task_freed_below_every_other_goes_first(db):
    """With every task labelled once (overlap 2), a new annotator's pick skips the empty
    "no labels yet" level without walking every task; a label undone makes that level
    non-empty again, and the next new annotator must get exactly that task."""
    ids = seed_tasks(db, pairwise=6)
    labels = {}
    for n in range(6):
        tid = store.next_task(db, f"a{n}")
        labels[tid] = store.submit_label(db, f"a{n}", tid, ranking(db, tid),
                                         margin_level="better")["label_id"]
    assert sorted(labels) == sorted(ids)                 # one label each
    store.set_required_labels(db, 2, ids)                # the index reloads: every task at 1
    first = store.next_task(db, "new1")
    assert first in ids                                  # a task with one label: none has fewer
    freed = next(t for t in ids if t != first)
    owner = next(f"a{n}" for n in range(6)
                 if db.scalar("SELECT count(*) FROM labels WHERE id = ? AND annotator = ?",
                              [labels[freed], f"a{n}"]))
    synced = db.memo["queue"].index.synced
    store.undo_label(db, owner, labels[freed])
    assert db.memo["queue"].index.synced == db.queue_commits != synced     # no reload
    assert store.next_task(db, "new2") == freed          # the one task with no label now


def test_the_studio_loads_the_queue_at_start(tmp_path):
    """A started studio loads the queue's index by itself, before any annotator asks."""
    server = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=3))
    try:
        index = None
        for _ in range(200):
            index = server.db.memo.get("queue") and server.db.memo["queue"].index
            if index is not None and index.synced == server.db.queue_commits:
                break
            time.sleep(0.05)
        assert index is not None and index.synced == server.db.queue_commits
        assert len(index.cycle) == 3 and not index.claims_by        # loaded; nothing claimed
    finally:
        server.close()
