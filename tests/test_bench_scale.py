"""bench/scale.py makes its millions of rows with DuckDB SQL: the rows must be what the store
itself would hold (real DuckDB file, the store's own code reading them)."""
import itertools
import sys
from pathlib import Path

from annotate import store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import scale  # noqa: E402


def test_synthetic_rankings_are_tie_groups_of_the_four_responses(tmp_path):
    path = tmp_path / "pairs.duckdb"
    scale.make_ranking_labels(path, 3000, "1GB")
    with store.Store(path) as db:
        labels = db.query("SELECT id, task_id, ranking FROM labels")
        assert len(labels) == 3000
        shapes = set()
        for label in labels:
            flat = [r for group in label["ranking"] for r in group]
            assert sorted(flat) == [f"{label['task_id']}-r{j}" for j in range(1, 5)], label
            shapes.add((tuple(len(g) for g in label["ranking"]), tuple(r[-1] for r in flat)))
        # every order of the four and every pattern of ties occurs
        assert {order for _, order in shapes} == set(itertools.permutations("1234"))
        assert len({sizes for sizes, _ in shapes}) == 8
        # the store expands them to exactly the pairs between groups
        expected = sum(a * b for label in labels
                       for a, b in itertools.combinations([len(g) for g in label["ranking"]], 2))
        table = store.label_pairs_table(db, columns=scale.KEY)
        assert table.num_rows == expected


def test_synthetic_queue_store_serves_tasks(tmp_path):
    path = tmp_path / "queue.duckdb"
    scale.make_queue_store(path, 50, "1GB")
    with store.Store(path) as db:
        assert db.scalar("SELECT count(*) FROM labels") == 50
        assert store.queue_progress(db, "probe")["left"] == 50   # overlap 2: all still open
        task_id = store.next_task(db, "probe")
        task = store.get_full_tasks(db, [task_id])[task_id]
        assert [r["id"] for r in task["responses"]] == [f"P{task_id[1:]}-r0", f"P{task_id[1:]}-r1"]
        ids = task["response_ids"]
        label = store.submit_label(db, "probe", task_id, [[ids[0]], [ids[1]]], margin_level="better")
        assert store.current_label(db, task_id, "probe")["id"] == label["label_id"]
