"""One write path for labels: every edit and undo — the queue's writer, supersede_label,
retract_label and run-folder ingest — goes through store.mark_superseded."""
import re
from pathlib import Path

from annotate import store
from annotate.runlog import RunLog

PROMPT = [{"role": "user", "content": "Name a colour."}]


def pair_task(db):
    p = store.prompt_row(PROMPT)
    rs = [store.response_row(p["id"], t) for t in ("red", "blue")]
    task = store.task_row(p["id"], [r["id"] for r in rs])
    store.write_batch(db, prompts=[p], responses=rs, tasks=[task])
    return task


def pointers(db) -> dict[str, str | None]:
    return {r["id"]: r["superseded_by"] for r in db.query("SELECT id, superseded_by FROM labels")}


def test_only_the_labels_module_writes_superseded_by():
    """A second place that sets ``superseded_by`` would be a second write path (issue 15)."""
    root = Path(__file__).resolve().parents[1]
    writers = sorted(str(p.relative_to(root)) for folder in ("annotate", "policy", "rewardmodel")
                     for p in (root / folder).rglob("*.py")
                     if re.search(r"SET\s+superseded_by", p.read_text(encoding="utf-8")))
    assert writers == ["annotate/store/labels.py"]


def test_the_first_change_to_a_label_wins(db):
    """An edit and an undo of the same label in one transaction: the edit counts, the undo
    finds the label no longer current and leaves it alone."""
    task = pair_task(db)
    a, b = task["response_ids"]
    old = store.label_row(task, "ann", [[a], [b]])
    new = store.label_row(task, "ann", [[b], [a]])
    store.add_labels(db, [old])
    with db.write() as cur:
        cur.execute("INSERT INTO labels (id, task_id, annotator, source, ranking) VALUES (?, ?, ?, ?, ?)",
                    [new["id"], task["id"], "ann", "human", new["ranking"]])
        store.mark_superseded(cur, [(old["id"], new["id"]), (old["id"], None)])
    assert pointers(db) == {old["id"]: new["id"], new["id"]: None}
    store.retract_label(db, new["id"])
    assert pointers(db)[new["id"]].startswith("retracted:")


def test_ingest_chains_a_folder_of_edits_behind_the_current_label(db, tmp_path):
    """Three verdicts by one judge in one folder, over a label already stored: each points at the
    next, the newest is current, and ingesting again changes nothing."""
    task = pair_task(db)
    a, b = task["response_ids"]
    stored = store.label_row(task, "judge", [[a], [b]], source="ai")
    store.add_labels(db, [stored])
    run = RunLog(tmp_path / "judge", "judge", {"judge": "local:tiny"})
    verdicts = [store.label_row(task, "judge", r, source="ai", soft_prob=p)
                for r, p in (([[b], [a]], 0.6), ([[a], [b]], 0.7), ([[b], [a]], 0.8))]
    run.record("labels", verdicts)
    assert store.ingest_run_dir(db, run.dir)["labels"] == 3
    chain = [stored["id"]] + [v["id"] for v in verdicts]
    assert pointers(db) == {**dict(zip(chain, chain[1:])), chain[-1]: None}
    assert store.ingest_run_dir(db, run.dir)["labels"] == 0
    assert pointers(db) == {**dict(zip(chain, chain[1:])), chain[-1]: None}


def test_queue_edit_then_undo(db):
    """An edit submitted without waiting, then the undo of the edited label, through the queue's
    writer: the first label points at the second, the second at a retraction marker."""
    task = pair_task(db)
    a, b = task["response_ids"]
    assert store.next_task(db, "ann") == task["id"]
    first = store.submit_label(db, "ann", task["id"], [[a], [b]], margin_level="better")
    second = store.submit_label_later(db, "ann", task["id"], [[b], [a]], margin_level="better")
    undone = store.undo_label(db, "ann", second.result()["label_id"])
    assert undone == task["id"]
    got = pointers(db)
    assert got[first["label_id"]] == second.result()["label_id"]
    assert got[second.result()["label_id"]].startswith("retracted:")
