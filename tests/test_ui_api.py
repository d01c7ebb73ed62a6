"""The scriptable API through gradio_client, against a real server and a real DuckDB file."""
import json

import pytest
from gradio_client.exceptions import AppError

from annotate import store
from annotation_data import label_counts, seed_tasks, snapshot
import studio_server


@pytest.fixture
def server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=3, ranking=1, k=4))
    yield srv
    srv.close()


def best_first(task):
    return json.dumps([[r["id"]] for r in task["responses"]])


def test_next_task_and_submit(server):
    ann = server.client("ann")
    task = ann.predict(api_name="/next_task")
    assert set(task) >= {"id", "kind", "prompt", "responses", "margin_levels"}
    assert task["prompt"][-1]["role"] == "user" and len(task["prompt"]) == 3
    ids = [r["id"] for r in task["responses"]]
    stored = store.get_task(server.db, task["id"])
    assert sorted(ids) == sorted(stored["response_ids"])
    assert ids == store.shown_order(task["id"], "ann", stored["response_ids"])  # the order shown

    margin = "slightly" if task["kind"] == "pairwise" else ""
    out = ann.predict(task["id"], json.dumps([[ids[1]], ids[:1] + ids[2:]]), margin, "B reads better",
                      api_name="/submit_label")
    row = store.current_label(server.db, task["id"], "ann")
    assert row["id"] == out["label_id"] and list(row["shown_order"]) == ids
    assert [list(g) for g in row["ranking"]][0] == [ids[1]]
    assert row["rationale"] == "B reads better" and row["duration_ms"] >= 0
    assert ann.predict(api_name="/progress") == {"done_today": 1, "done_total": 1, "left": 3}
    assert [r["label_id"] for r in ann.predict(20, api_name="/my_labels")] == [out["label_id"]]


def test_submit_again_supersedes(server):
    ann = server.client("ann")
    task = ann.predict(api_name="/next_task")
    ids = [r["id"] for r in task["responses"]]
    margin = "better" if task["kind"] == "pairwise" else ""
    first = ann.predict(task["id"], json.dumps([[i] for i in ids]), margin, "", api_name="/submit_label")
    second = ann.predict(task["id"], json.dumps([[i] for i in ids[::-1]]), margin, "on reflection",
                         api_name="/submit_label")
    assert second["superseded"] == first["label_id"]
    assert label_counts(server.db) == {"rows": 2, "current": 1, "max_per_annotator": 1}
    old = server.db.query("SELECT superseded_by FROM labels WHERE id = ?", [first["label_id"]])
    assert old[0]["superseded_by"] == second["label_id"]


def test_skip_then_come_back_last(server):
    ann = server.client("ann")
    skipped = ann.predict(api_name="/next_task")
    ann.predict(skipped["id"], api_name="/skip_task")
    seen = []
    while (task := ann.predict(api_name="/next_task")) is not None:
        seen.append(task["id"])
        margin = "better" if task["kind"] == "pairwise" else ""
        ann.predict(task["id"], best_first(task), margin, "", api_name="/submit_label")
    assert seen[-1] == skipped["id"] and len(seen) == 4


def test_undo_keeps_the_row_and_requeues(server):
    ann = server.client("ann")
    task = ann.predict(api_name="/next_task")
    margin = "better" if task["kind"] == "pairwise" else ""
    out = ann.predict(task["id"], best_first(task), margin, "", api_name="/submit_label")
    assert ann.predict("", api_name="/undo_label") == {"undone": out["label_id"]}
    assert label_counts(server.db) == {"rows": 1, "current": 0, "max_per_annotator": 0}
    assert ann.predict(api_name="/progress")["left"] == 4


def test_overlap_two_with_three_annotators(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=3, required=2))
    try:
        clients = {name: srv.client(name) for name in ("ann", "bob", "cid")}
        done = {name: [] for name in clients}
        for _ in range(3):
            for name, client in clients.items():
                task = client.predict(api_name="/next_task")
                if task is not None:
                    client.predict(task["id"], best_first(task), "better", "", api_name="/submit_label")
                    done[name].append(task["id"])
        for client in clients.values():
            assert client.predict(api_name="/next_task") is None
        per_task = srv.db.query("SELECT task_id, count(*) AS n FROM labels "
                                "WHERE superseded_by IS NULL GROUP BY task_id")
        assert sorted(r["n"] for r in per_task) == [2, 2, 2]
        assert all(len(set(v)) == len(v) == 2 for v in done.values())
    finally:
        srv.close()


@pytest.mark.parametrize("case, message", [
    ("unknown id", "is not part of this task"),
    ("duplicate id", "appears twice"),
    ("missing response", "leaves out response"),
    ("wrong task", "was not handed to"),
    ("not json", "not valid JSON"),
    ("unknown task", "unknown task id"),
    ("bad margin", "margin must be one of"),
])
def test_bad_ranking_payloads_are_refused(server, case, message):
    ann = server.client("ann")
    task = ann.predict(api_name="/next_task")
    if case == "bad margin":   # margins belong to pairwise tasks: skip past the ranking
        while task["kind"] != "pairwise":
            ann.predict(task["id"], api_name="/skip_task")
            task = ann.predict(api_name="/next_task")
    ids = [r["id"] for r in task["responses"]]
    other = next(t for t in store.task_ids(server.db) if t != task["id"])
    margin = "better" if task["kind"] == "pairwise" else ""
    args = {
        "unknown id": (task["id"], json.dumps([[ids[0]], ["r-nope"]] + [[i] for i in ids[2:]]), margin),
        "duplicate id": (task["id"], json.dumps([[ids[0]], [ids[0]]]), margin),
        "missing response": (task["id"], json.dumps([[ids[0]]]), margin),
        "wrong task": (other, json.dumps([[i] for i in store.get_task(server.db, other)["response_ids"]]),
                       "better" if store.get_task(server.db, other)["kind"] == "pairwise" else ""),
        "not json": (task["id"], "[[", margin),
        "unknown task": ("t-nope", json.dumps([[i] for i in ids]), margin),
        "bad margin": (task["id"], json.dumps([[i] for i in ids]), "enormously"),
    }[case]
    before = snapshot(server.db)
    with pytest.raises(AppError, match=message):
        ann.predict(*args, "", api_name="/submit_label")
    assert snapshot(server.db) == before


def test_annotator_sees_only_own_labels(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=2, required=2))
    try:
        ann, bob = srv.client("ann"), srv.client("bob")
        task = bob.predict(api_name="/next_task")
        bob.predict(task["id"], best_first(task), "better", "bob's secret reason", api_name="/submit_label")
        assert ann.predict(20, api_name="/my_labels") == []
        ann_task = ann.predict(api_name="/next_task")
        assert "labels" not in ann_task and "bob's secret reason" not in json.dumps(ann_task)
        bob_label = store.current_label(srv.db, task["id"], "bob")["id"]
        with pytest.raises(AppError, match="belongs to another annotator"):
            ann.predict(bob_label, api_name="/undo_label")
        assert store.current_label(srv.db, task["id"], "bob")["superseded_by"] is None
    finally:
        srv.close()


def test_admin_manages_users_and_overlap(server):
    admin = server.client("admin1")
    rows = admin.predict("add", "newbie", "annotator", "newbie-password", api_name="/users")
    assert {"name": "newbie", "role": "annotator"}.items() <= next(
        r for r in rows if r["name"] == "newbie").items()
    assert store.verify_user(server.db, "newbie", "newbie-password") == "annotator"
    admin.predict("set_role", "newbie", "admin", "", api_name="/users")
    assert store.role_of(server.db, "newbie") == "admin"
    with pytest.raises(AppError, match="already exists"):
        admin.predict("add", "newbie", "annotator", "newbie-password", api_name="/users")
    result = admin.predict(2, None, api_name="/set_overlap")
    assert result == {"tasks": 4, "required_labels": 2}
    assert server.db.scalar("SELECT min(required_labels) FROM tasks") == 2


def test_agreement_and_browse_for_admins(server):
    ann, admin = server.client("ann"), server.client("admin1")
    task = ann.predict(api_name="/next_task")
    ann.predict(task["id"], best_first(task), "better" if task["kind"] == "pairwise" else "", "",
                api_name="/submit_label")
    summary, per_annotator, per_task = admin.predict("human", api_name="/agreement")
    assert "Krippendorff" in summary and per_annotator["data"][0][0] == "ann"
    table = admin.predict("labels", "", "", "ann", "", None, None, api_name="/browse")
    assert len(table["data"]) == 1 and "annotator" in table["headers"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_admin_imports_a_file_and_downloads_trl_pairs(server, tmp_path):
    from gradio_client import handle_file
    admin = server.client("admin1")
    src = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Name a prime number.", "chosen": "7", "rejected": "8", "margin_level": "better"},
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"}])
    result = admin.predict(handle_file(str(src)), "auto", 0, 1, api_name="/import_file")
    assert result["format"] == "pairs" and result["tasks"] == 2 and result["labels"] == 2
    assert result["file"] == "prefs.jsonl"
    copies = list((server.workspace / "uploads").rglob("prefs.jsonl"))
    assert len(copies) == 1  # the upload is kept inside the workspace
    assert str(server.workspace / "tmp") in __import__("os").environ["GRADIO_TEMP_DIR"]

    downloaded = admin.predict("both", "", api_name="/export_pairs")
    rows = [json.loads(line) for line in open(downloaded)]
    assert {r["chosen"][0]["content"] for r in rows} == {"7", "Paris"}
    assert {"prompt", "chosen", "rejected", "margin"} <= set(rows[0])
    exported = list((server.workspace / "exports").rglob("pairs.jsonl"))
    assert len(exported) == 1 and exported[0].resolve().is_relative_to(server.workspace.resolve())


def test_rejected_import_shows_the_cli_reason_and_changes_nothing(server, tmp_path):
    import subprocess
    import sys
    from gradio_client import handle_file
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "Fine row", "chosen": "a", "rejected": "b"},
        {"prompt": "Broken row", "chosen": "a", "rejected": "b", "margin_level": "enormous"}])
    before = snapshot(server.db)
    with pytest.raises(AppError) as err:
        server.client("admin1").predict(handle_file(str(bad)), "auto", 0, 1, api_name="/import_file")
    assert snapshot(server.db) == before
    cli = subprocess.run([sys.executable, str(studio_server.ROOT / "app.py"), "import", str(bad),
                          "--db", str(tmp_path / "cli.duckdb")], capture_output=True, text=True)
    assert cli.returncode == 2
    cli_reason = cli.stderr.strip().replace(f"prefstudio import: {bad}", "bad.jsonl")
    assert str(err.value) == cli_reason and cli_reason.startswith("bad.jsonl:2:")


def test_annotator_upload_is_refused_before_touching_the_file(server, tmp_path):
    from gradio_client import handle_file
    src = write_jsonl(tmp_path / "sneaky.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    before = snapshot(server.db)
    with pytest.raises(AppError, match="only admins"):
        server.client("ann").predict(handle_file(str(src)), "auto", 0, 1, api_name="/import_file")
    assert snapshot(server.db) == before
    assert not list((server.workspace / "uploads").rglob("sneaky.jsonl"))
