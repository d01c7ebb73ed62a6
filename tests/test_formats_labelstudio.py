"""Label Studio's JSON export in and out: pairwise and ranker projects (issue 16).

The files are written from Label Studio's documented schemas: a task is
``{"id", "data", "annotations": [{"completed_by", "was_cancelled", "result": [...]}]}``; the
Pairwise tag's result value is ``{"selected": "left" | "right"}``, the Ranker's
``{"ranker": {name or bucket: [item ids]}}``.
"""
import json
import subprocess
import sys
from pathlib import Path

from annotate import formats, store
from interchange_data import PAIRS_ONLY, load, read_json, same_content

ROOT = Path(__file__).resolve().parents[1]


def pairwise(selected, frm="comparison"):
    return {"id": "r1", "from_name": frm, "to_name": frm, "type": "pairwise", "origin": "manual",
            "value": {"selected": selected}}


def ranker(value, frm="rank"):
    return {"id": "r2", "from_name": frm, "to_name": "items", "type": "ranker", "origin": "manual",
            "value": {"ranker": value}}


def annotation(user, *results, cancelled=False):
    return {"id": 1, "completed_by": user, "was_cancelled": cancelled, "ground_truth": False,
            "lead_time": 4.2, "result": list(results)}


ITEMS = [{"id": "blog", "title": "A", "body": "Once upon a time"},
         {"id": "mdn", "title": "B", "body": "It was a dark night"},
         {"id": "wiki", "title": "C", "body": "Call me Ishmael"}]
TASKS = [
    {"id": 1, "data": {"prompt": "Capital of France?", "answer1": "Paris.", "answer2": "Lyon."},
     "annotations": [annotation(7, pairwise("left")),
                     annotation({"id": 8, "email": "bob@example.com"}, pairwise("right")),
                     annotation(9, pairwise("left"), cancelled=True),
                     annotation(10, {"type": "textarea", "value": {"text": ["meh"]}})],
     "predictions": [{"model_version": "gpt-judge", "score": 0.9, "result": [pairwise("left")]}]},
    {"id": 2, "data": {"prompt": "Rank these openings.", "items": ITEMS},
     "annotations": [annotation(7, ranker({"rank": ["wiki", "blog", "mdn"]})),
                     annotation(8, ranker({"best": ["wiki"], "good": ["blog", "mdn"], "bad": []})),
                     annotation(9, ranker({"best": ["wiki"], "_": ["blog", "mdn"]}))]},
    {"id": 3, "data": {"prompt": "Say hi.", "answer1": "Hi!", "answer2": "Go away."}, "annotations": []},
]


def labels_by(db):
    texts = {r["id"]: r["text"] for r in store.list_responses(db)}
    return {(lab["annotator"], lab["source"]): [[texts[i] for i in g] for g in lab["ranking"]]
            for lab in store.label_history(db)}


def test_pairwise_and_ranker_projects_import_with_annotators_and_ties(db, tmp_path):
    path = tmp_path / "project-1-at-2026.json"
    text = json.dumps(TASKS, indent=2)
    path.write_text(text)
    second = text.splitlines().index('    "id": 2,')   # 0-based: the line of its "{" (1-based)
    result = formats.import_file(db, path, fmt="labelstudio")
    assert (result["prompts"], result["tasks"], result["labels"]) == (3, 3, 5)
    reasons = [s["reason"] for s in result["skipped_rows"]]
    assert reasons == ["annotations[2] was cancelled (skipped in Label Studio)",
                       "annotations[3] has no pairwise or ranker result",
                       "annotations[2] leaves items unsorted"]
    assert [s["line"] for s in result["skipped_rows"]] == [2, 2, second]   # where each task starts
    got = labels_by(db)
    assert got[("ls-user-7", "human")] in ([["Paris."], ["Lyon."]], [["Call me Ishmael"], ["Once upon a time"],
                                                                       ["It was a dark night"]])
    assert got[("bob@example.com", "human")] == [["Lyon."], ["Paris."]]
    assert got[("gpt-judge", "ai")] == [["Paris."], ["Lyon."]]
    ranked = {lab["annotator"]: lab for lab in store.rankings(db, kind="ranking")}
    texts = {r["id"]: r["text"] for r in store.list_responses(db)}
    assert [[texts[i] for i in g] for g in ranked["ls-user-7"]["ranking"]] == \
        [["Call me Ishmael"], ["Once upon a time"], ["It was a dark night"]]
    assert sorted(map(sorted, ([texts[i] for i in g] for g in ranked["ls-user-8"]["ranking"]))) == \
        [["Call me Ishmael"], ["It was a dark night", "Once upon a time"]]   # one bucket = a tie
    unlabelled = [t for t in store.list_tasks(db) if t["kind"] == "pairwise"
                  and not any(lab["task_id"] == t["id"] for lab in store.label_history(db))]
    assert len(unlabelled) == 1                     # "Say hi." is a task waiting for labels
    assert formats.import_file(db, path, fmt="labelstudio")["labels"] == 0   # again: nothing new


def test_round_trip_keeps_labels_annotators_ties_and_ai_labels(db, tmp_path):
    load(db, tmp_path)
    out = tmp_path / "out" / "ls.json"
    result = formats.export(db, "labels", out, fmt="labelstudio")
    assert result["rows"] == 7 and "<Ranker" in result["label_config"]
    tasks = read_json(out)
    assert all("items" in t["data"] for t in tasks)          # ties and 3-way: the Ranker layout
    assert sum(len(t["predictions"]) for t in tasks) == 1     # the AI judge's label
    fresh = store.Store(tmp_path / "fresh.duckdb")
    assert formats.import_file(fresh, out, fmt="labelstudio")["labels"] == 7
    same_content(db, fresh)


def test_strict_pairs_export_in_the_pairwise_layout(db, tmp_path):
    load(db, tmp_path, PAIRS_ONLY)
    out = tmp_path / "pairs.json"
    assert "<Pairwise" in formats.export(db, "rankings", out, fmt="labelstudio")["label_config"]
    tasks = read_json(out)
    results = [a["result"][0] for t in tasks for a in t["annotations"]]
    assert {r["type"] for r in results} == {"pairwise"}
    assert sorted(r["value"]["selected"] for r in results) == ["left", "left", "right"]
    assert all(set(t["data"]) == {"prompt", "answer1", "answer2"} for t in tasks)
    fresh = store.Store(tmp_path / "fresh.duckdb")
    formats.import_file(fresh, out, fmt="labelstudio")
    same_content(db, fresh)


def test_prompt_and_response_fields_are_configurable(db, tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps([{"data": {"question": "2+2?", "x": "4", "y": "5"},
                                 "annotations": [annotation("ann", pairwise("right"))]}]))
    result = formats.import_file(db, path, fmt="labelstudio", prompt_field="question",
                                 response_fields=["y", "x"])
    assert result["labels"] == 1
    assert labels_by(db)[("ann", "human")] == [["4"], ["5"]]   # right = x


def test_the_cli_imports_and_exports(tmp_path):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(TASKS))
    env_db = str(tmp_path / "cli.duckdb")
    run = lambda *a: subprocess.run([sys.executable, "app.py", *a, "--db", env_db],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
    done = run("import", str(path), "--format", "labelstudio")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported ls.json as labelstudio") and "5 labels new" in done.stdout
    done = run("export", "labels", "--format", "labelstudio", "--out", str(tmp_path / "back.json"))
    assert done.returncode == 0 and done.stdout.startswith("wrote 5 labels rows to"), done.stderr
    assert len(read_json(tmp_path / "back.json")) == 2   # the unlabelled task has no labels to export
