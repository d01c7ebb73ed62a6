"""Argilla v2 datasets in and out: ``rg.Dataset.to_disk`` folders (settings + records.json)
and the ``to_hub`` layout (settings + Parquet with flattened response columns) (issue 16).

The files are written from Argilla's documented layout: ``.argilla/settings.json`` holds the
fields and questions (``{"name", "settings": {"type": "ranking", "options": [{"value"}]}}``);
a record is ``{"id", "fields", "responses": {question: [{"value", "user_id", "status"}]},
"metadata", "suggestions", "vectors"}``; a ranking value lists option values, best first.
"""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotate import formats, store
from formats_helpers import snapshot
from interchange_data import RANKINGS, load, read_json, same_content

ROOT = Path(__file__).resolve().parents[1]
U1, U2, U3 = ("3f2a6b0e-8d1c-4c57-9b1e-2f9a1d6c7e01", "7c1d9e22-5b4a-4e8f-a0c3-6d2b8f9e1a02",
              "a9e4f1c3-2d7b-4b6a-8e5f-1c3d5e7f9a03")


def field(name, kind="text"):
    return {"name": name, "title": name, "required": True, "settings": {"type": kind, "use_markdown": False}}


def question(name, kind, options):
    return {"name": name, "title": name, "description": None, "required": True,
            "settings": {"type": kind, "options": [{"value": o, "text": str(o), "description": None}
                                                   for o in options]}}


def write_dataset(folder: Path, fields, questions, records) -> Path:
    (folder / ".argilla").mkdir(parents=True)
    (folder / ".argilla" / "settings.json").write_text(json.dumps(
        {"guidelines": "Rank", "allow_extra_metadata": False, "fields": fields, "questions": questions,
         "metadata": [], "vectors": [], "distribution": {"strategy": "overlap", "min_submitted": 1}}))
    (folder / ".argilla" / "dataset.json").write_text(json.dumps({"name": folder.name, "status": "ready"}))
    (folder / "records.json").write_text(json.dumps(records))
    return folder


def record(rid, fields, responses):
    return {"id": rid, "fields": fields, "metadata": {}, "suggestions": {}, "vectors": {},
            "responses": responses, "status": "completed", "_server_id": None}


RANKING_RECORDS = [
    record("r1", {"prompt": "Capital of France?", "response1": "Paris.", "response2": "Lyon.",
                  "response3": "Marseille."},
           {"ranking": [{"value": ["response1", "response3", "response2"], "user_id": U1, "status": "submitted"},
                        {"value": [{"value": "response1", "rank": 1}, {"value": "response2", "rank": 2},
                                   {"value": "response3", "rank": 2}], "user_id": U2, "status": "submitted"},
                        {"value": ["response2", "response1", "response3"], "user_id": U3, "status": "discarded"}]}),
    record("r2", {"prompt": "Say hi.", "response1": "Hi!", "response2": "Go away."},
           {"ranking": [{"value": ["response2", "response1"], "user_id": U3, "status": "draft"}]}),
]


def labels_of(db):
    texts = {r["id"]: r["text"] for r in store.list_responses(db)}
    return {lab["annotator"]: [sorted(texts[i] for i in g) for g in lab["ranking"]]
            for lab in store.label_history(db)}


def ranking_dataset(tmp_path):
    return write_dataset(tmp_path / "argilla-ranking",
                         [field("prompt"), field("response1"), field("response2"), field("response3")],
                         [question("ranking", "ranking", ["response1", "response2", "response3"])],
                         RANKING_RECORDS)


def test_ranking_questions_become_labels_per_submitted_user(db, tmp_path):
    result = formats.import_file(db, ranking_dataset(tmp_path), fmt="argilla")
    assert (result["prompts"], result["tasks"], result["labels"]) == (2, 2, 2)
    assert result["source"] == "argilla-ranking"
    assert [s["reason"] for s in result["skipped_rows"]] == [
        "records[0].responses.ranking[2] is discarded, not submitted",
        "records[1].responses.ranking[0] is draft, not submitted"]
    got = labels_of(db)
    assert got[U1] == [["Paris."], ["Marseille."], ["Lyon."]]
    assert got[U2] == [["Paris."], ["Lyon.", "Marseille."]]          # equal ranks: a tie
    assert {lab["source"] for lab in store.label_history(db)} == {"human"}
    kinds = sorted(t["kind"] for t in store.list_tasks(db))
    assert kinds == ["pairwise", "ranking"]                          # r2 waits for labels


def test_records_json_alone_imports_without_settings(db, tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps(RANKING_RECORDS))
    assert formats.import_file(db, path, fmt="argilla")["labels"] == 2
    assert labels_of(db)[U1] == [["Paris."], ["Marseille."], ["Lyon."]]


def test_ratings_of_two_responses_become_pairwise_labels(db, tmp_path):
    records = [record("a", {"instruction": "Write a haiku.", "response1": "Old pond, frog jumps in",
                            "response2": "I like turtles"},
                      {"rating_response1": [{"value": 4, "user_id": U1, "status": "submitted"},
                                            {"value": 2, "user_id": U2, "status": "submitted"}],
                       "rating_response2": [{"value": 2, "user_id": U1, "status": "submitted"},
                                            {"value": 2, "user_id": U2, "status": "submitted"}]})]
    folder = write_dataset(tmp_path / "ratings", [field("instruction"), field("response1"), field("response2")],
                           [question("rating_response1", "rating", [1, 2, 3, 4, 5]),
                            question("rating_response2", "rating", [1, 2, 3, 4, 5])], records)
    assert formats.import_file(db, folder, fmt="argilla")["labels"] == 2
    got = labels_of(db)
    assert got[U1] == [["Old pond, frog jumps in"], ["I like turtles"]]
    assert got[U2] == [["I like turtles", "Old pond, frog jumps in"]]   # equal ratings: a tie
    assert {t["kind"] for t in store.list_tasks(db)} == {"pairwise"}


def test_the_hub_layout_imports_like_the_disk_layout(db, tmp_path):
    disk = ranking_dataset(tmp_path)
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    (hub / ".argilla").mkdir()
    (hub / ".argilla" / "settings.json").write_text((disk / ".argilla" / "settings.json").read_text())
    rows = [{"id": "r1", "status": "completed", "_server_id": None, "prompt": "Capital of France?",
             "response1": "Paris.", "response2": "Lyon.", "response3": "Marseille.",
             "ranking.responses": [["response1", "response3", "response2"]],
             "ranking.responses.users": [U1], "ranking.responses.status": ["submitted"]},
            {"id": "r2", "status": "pending", "_server_id": None, "prompt": "Say hi.",
             "response1": "Hi!", "response2": "Go away.", "response3": None,
             "ranking.responses": [["response2", "response1"]],
             "ranking.responses.users": [U3], "ranking.responses.status": ["draft"]}]
    pq.write_table(pa.Table.from_pylist(rows), hub / "data" / "train-00000-of-00001.parquet")
    result = formats.import_file(db, hub, fmt="argilla")
    assert (result["tasks"], result["labels"]) == (2, 1)
    assert labels_of(db)[U1] == [["Paris."], ["Marseille."], ["Lyon."]]


def test_round_trip_keeps_labels_annotators_ties_and_ai_labels(db, tmp_path):
    load(db, tmp_path)
    out = tmp_path / "exported"
    assert formats.export(db, "labels", out, fmt="argilla")["rows"] == len(RANKINGS)
    settings = read_json(out / ".argilla" / "settings.json")
    assert settings["questions"][0]["settings"]["type"] == "ranking"
    assert settings["fields"][0]["settings"]["type"] == "chat"       # a dialogue prompt is a chat field
    fresh = store.Store(tmp_path / "fresh.duckdb")
    assert formats.import_file(fresh, out, fmt="argilla")["labels"] == len(RANKINGS)
    same_content(db, fresh)
    # exporting again replaces the earlier export; a folder holding anything else is refused
    assert formats.export(db, "rankings", out, fmt="argilla")["records"] == 3
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    try:
        formats.export(db, "rankings", other, fmt="argilla")
        raise AssertionError("exported into a folder that was not empty")
    except formats.FormatError as err:
        assert "neither an empty folder nor an earlier export" in str(err)
    assert (other / "notes.txt").read_text() == "keep me"


def test_the_cli_imports_a_dataset_folder(tmp_path):
    folder = ranking_dataset(tmp_path)
    done = subprocess.run([sys.executable, "app.py", "import", str(folder), "--format", "argilla",
                           "--db", str(tmp_path / "cli.duckdb")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported argilla-ranking as argilla") and "2 labels new" in done.stdout


def test_broken_settings_are_refused_naming_the_settings_file(db, tmp_path):
    folder = ranking_dataset(tmp_path)
    settings = folder / ".argilla" / "settings.json"
    settings.write_text('{"fields": [], "questions": ')
    formats.import_file(db, write_jsonl_prompt(tmp_path), fmt="prompts")
    before = snapshot(db)
    try:
        formats.import_file(db, folder, fmt="argilla")
        raise AssertionError("imported a dataset with broken settings")
    except formats.FormatError as err:
        assert str(err).startswith(f"{settings}:1: (file): not valid JSON")
    assert snapshot(db) == before


def write_jsonl_prompt(folder: Path) -> Path:
    path = folder / "p.jsonl"
    path.write_text(json.dumps({"prompt": "already here"}) + "\n")
    return path
