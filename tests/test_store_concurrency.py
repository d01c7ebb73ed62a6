"""One process owns the file; inside it, threads write through their own cursors."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from annotate import store

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys
sys.path.insert(0, {root!r})
from annotate import store
db = store.Store({path!r})
print("ready", flush=True)
sys.stdin.readline()
db.close()
"""


def test_a_second_process_gets_store_busy_naming_the_owner(tmp_path):
    path = tmp_path / "owned.duckdb"
    store.Store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), path=str(path))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(store.StoreBusy) as err:
            store.Store(path)
        assert f"PID {holder.pid}" in str(err.value)
        assert "web UI" in str(err.value)
    finally:
        holder.communicate("\n", timeout=60)
    with store.Store(path) as db:   # free again once the owner has gone
        assert db.version == store.SCHEMA_VERSION


def test_threads_write_and_read_concurrently_without_losing_rows(db):
    n_threads, per_thread = 4, 8
    errors = []

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                p = store.prompt_row(f"thread {k} prompt {i}")
                store.add_prompts(db, [p])
                rs = [store.response_row(p["id"], f"answer {j} of {k}/{i}") for j in range(2)]
                store.add_responses(db, rs)
                t = store.task_row(p["id"], [r["id"] for r in rs])
                store.add_tasks(db, [t])
                store.add_labels(db, [store.label_row(t, f"user{k}", [[rs[0]["id"]], [rs[1]["id"]]])])
                assert store.counts(db)["prompts"] >= i + 1   # reads interleave with the writes
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = n_threads * per_thread
    assert store.counts(db) == {"prompts": total, "responses": 2 * total, "tasks": total,
                                "labels": total}
    assert len(store.pairs(db)) == total


def test_a_failed_write_rolls_back_everything_in_its_transaction(db):
    p = store.prompt_row("atomic?")
    with pytest.raises(RuntimeError):
        with db.write() as cur:
            cur.execute("INSERT INTO prompts (id, messages) VALUES (?, ?)", [p["id"], p["messages"]])
            raise RuntimeError("boom")
    assert store.counts(db)["prompts"] == 0
    store.add_prompts(db, [p])    # the connection is usable afterwards
    assert store.counts(db)["prompts"] == 1
