"""Every import format: import → export (JSONL, CSV, Parquet) → import into a fresh db → same content."""
import gzip
import json

import pyarrow.parquet as pq
import pytest

from annotate import formats, store
from formats_helpers import FILE_TYPES, pair_content, snapshot, write_csv, write_jsonl, write_rows

HARD_TEXT = 'comma, "quotes", a\nnew line, tab\there and émoji 👍'

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1},
    {"prompt": [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Capital of France?"}],
     "chosen": [{"role": "assistant", "content": "Paris"}],
     "rejected": [{"role": "assistant", "content": "Lyon, I think"}], "margin": "slightly"},
    {"prompt": [{"role": "user", "content": HARD_TEXT}, {"role": "assistant", "content": "Go on."},
                {"role": "user", "content": "第二个问题"}],
     "chosen": "Ça va très bien — merci!", "rejected": "第二个回答", "margin": 0.6},
    {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
    {"prompt": "[1, 2, 3] sort this list", "chosen": "[1, 2, 3]", "rejected": "[3, 2, 1]"},
    {"prompt": "Is the sky green?", "chosen": "No.", "rejected": "Yes.", "source": "ai",
     "soft_prob": 0.75, "judge": "local:tiny"},
]


def fresh(tmp_path, name):
    return store.Store(tmp_path / f"{name}.duckdb")


def test_pairs_import_gives_the_expected_pairs(db, tmp_path):
    result = formats.import_file(db, write_jsonl(tmp_path / "prefs.jsonl", PAIRS))
    assert result["format"] == "pairs" and result["labels"] == 6 and result["skipped"] == 0
    got = {(p["chosen"], p["rejected"]): p for p in store.pairs(db)}
    assert got[("4", "5")]["margin_level"] == "significantly"
    assert got[("Paris", "Lyon, I think")]["margin_level"] == "slightly"
    assert got[("Ça va très bien — merci!", "第二个回答")]["margin_level"] == "better"   # 0.6 → 2/3
    assert got[("Hi!", "No.")]["margin_level"] is None
    assert json.loads(got[("Hi!", "No.")]["prompt"]) == [{"content": "Say hi", "role": "user"}]
    assert got[("[1, 2, 3]", "[3, 2, 1]")]["source"] == "human"
    ai = got[("No.", "Yes.")]
    assert (ai["source"], ai["soft_prob"]) == ("ai", 0.75)
    labels = {lab["annotator"] for lab in store.label_history(db)}
    assert labels == {"prefs"}     # the file's source name labels


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_pairs_round_trip(db, tmp_path, file_type):
    formats.import_file(db, write_jsonl(tmp_path / "prefs.jsonl", PAIRS))
    out = formats.export(db, "pairs", tmp_path / f"out.{file_type}")
    assert out["rows"] == 6
    with fresh(tmp_path, "again") as again:
        result = formats.import_file(again, tmp_path / f"out.{file_type}")
        assert result["format"] == "pairs" and result["ignored_fields"] == []
        assert pair_content(again) == pair_content(db)


def test_pairs_export_uses_trl_conversational_columns(db, tmp_path):
    formats.import_file(db, write_jsonl(tmp_path / "prefs.jsonl", PAIRS))
    formats.export(db, "pairs", tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["prompt", "chosen", "rejected", "margin", "margin_level",
                                  "soft_prob", "source", "votes_chosen", "votes_rejected",
                                  "n_labels", "agreement", "round", "task_id"]
    row = next(r for r in table.to_pylist() if r["chosen"][0]["content"] == "Paris")
    assert row["prompt"] == PAIRS[1]["prompt"] and row["rejected"] == PAIRS[1]["rejected"]
    assert (row["votes_chosen"], row["n_labels"], row["agreement"]) == (1, 1, 1.0)


RANKINGS = [
    {"prompt": "Rank these haiku.", "annotator": "alice",
     "responses": [{"text": "old pond", "model": "m1", "gen_params": {"temperature": 0.7}},
                   {"text": "frog jumps", "model": "m1", "gen_params": {"temperature": 1.0}},
                   {"text": "sound of water", "model": "m2"}, "silence"],
     "ranking": [[2], [0, 1], [3]]},
    {"prompt": "Rank these haiku.", "annotator": "bob",
     "responses": ["old pond", "frog jumps", "sound of water", "silence"], "ranking": [[3], [2], [1], [0]]},
    {"prompt": [{"role": "user", "content": HARD_TEXT}], "responses": ["x", "y", "z"],
     "ranking": [1, 0, 2], "round": 2},
    {"prompt": "Pick one", "responses": ["yes", "no"], "ranking": [[1], [0]], "annotator": "judge",
     "source": "ai", "judge": "local:tiny", "soft_prob": 0.9, "margin_level": "better",
     "rationale": "no is safer", "principle": "harmless"},
]


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_rankings_round_trip(db, tmp_path, file_type):
    rows = RANKINGS + [None]
    result = formats.import_file(db, write_jsonl(tmp_path / "ranks.jsonl", RANKINGS))
    assert (result["tasks"], result["labels"], result["responses"]) == (3, 4, 9)
    # a row may label a task by id (here: carol, on the haiku task)
    haiku = next(t for t in store.list_tasks(db) if len(t["response_ids"]) == 4)
    formats.import_file(db, write_jsonl(tmp_path / "carol.jsonl",
                                        [{"task_id": haiku["id"], "ranking": [[0], [1], [2], [3]],
                                          "annotator": "carol"}]), fmt="rankings")
    before = snapshot(db)
    assert len(before["labels"]) == 5
    out = formats.export(db, "rankings", tmp_path / f"ranks-out.{file_type}")
    assert out["rows"] == 5
    with fresh(tmp_path, "again") as again:
        formats.import_file(again, tmp_path / f"ranks-out.{file_type}")
        assert snapshot(again) == before
        assert pair_content(again) == pair_content(db)
    del rows


def test_rankings_expand_to_the_expected_pairs(db, tmp_path):
    formats.import_file(db, write_jsonl(tmp_path / "ranks.jsonl", RANKINGS[:2]))
    got = {(p["chosen"], p["rejected"]): (p["votes_chosen"], p["votes_rejected"], p["n_labels"])
           for p in store.pairs(db)}
    # alice: water > {pond, frog} > silence ; bob: silence > water > frog > pond
    assert got == {("sound of water", "old pond"): (2, 0, 2), ("sound of water", "frog jumps"): (2, 0, 2),
                   ("frog jumps", "old pond"): (1, 0, 2)}   # water/silence and pond/silence split 1-1


PROMPTS = [
    {"prompt": "Write a limerick about tea.", "tags": ["writing", "fun"]},
    {"prompt": [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": HARD_TEXT}], "source": "handmade"},
    {"prompt": "如何学习编程？", "tags": ["zh"]},
]


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_prompts_round_trip(db, tmp_path, file_type):
    result = formats.import_file(db, write_rows(tmp_path, "prompts", PROMPTS, file_type))
    assert (result["format"], result["prompts"]) == ("prompts", 3)
    before = snapshot(db, prompt_source=True)
    assert {p[3] for p in before["prompts"]} == {"prompts", "handmade"}
    formats.export(db, "prompts", tmp_path / f"p-out.{file_type}")
    with fresh(tmp_path, "again") as again:
        formats.import_file(again, tmp_path / f"p-out.{file_type}")
        assert snapshot(again, prompt_source=True) == before


RESPONSES = [
    {"prompt": "Tell me a joke.", "response": "Why did the chicken cross the road?"},
    {"prompt": "Tell me a joke.", "responses": ["Knock knock.", "I don't know any."]},
    {"prompt": [{"role": "user", "content": "Sort [3,1,2] in Python."}], "task": "ranking", "round": 1,
     "responses": [{"text": "sorted([3,1,2])", "model": "m", "gen_params": {"temperature": 0.2, "top_p": 0.9}},
                   {"text": "[3,1,2].sort()", "model": "m", "gen_params": {"temperature": 1.0}},
                   {"text": HARD_TEXT, "model": "m"}, {"text": "no idea", "adapter": "runs/sft/adapter"}]},
    {"prompt": "Count to twelve.", "model": "m2", "gen_params": {"seed": 1},
     "responses": [f"{i}" for i in range(1, 13)]},
    {"prompt": "Three candidates, no task.", "responses": ["a", "b", "c"], "task": "none"},
]


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_responses_round_trip(db, tmp_path, file_type):
    result = formats.import_file(db, write_rows(tmp_path, "resp", RESPONSES, file_type), fmt="responses")
    assert (result["prompts"], result["responses"], result["tasks"]) == (4, 22, 2)
    before = snapshot(db)
    kinds = sorted((t[3], len(t[2]), t[4]) for t in before["tasks"])
    assert kinds == [("pairwise", 2, 0), ("ranking", 4, 1)]
    counting = [r for r in store.list_responses(db) if r["text"] == "12"][0]
    assert (counting["model"], counting["gen_params"]) == ("m2", {"seed": 1})
    formats.export(db, "responses", tmp_path / f"r-out.{file_type}")
    with fresh(tmp_path, "again") as again:
        formats.import_file(again, tmp_path / f"r-out.{file_type}")
        assert snapshot(again) == before


def test_a_response_can_name_an_existing_prompt_by_id(db, tmp_path):
    formats.import_file(db, write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hello?"}]))
    pid = store.prompt_id(store.check_messages("Hello?"))
    formats.import_file(db, write_jsonl(tmp_path / "r.jsonl", [{"prompt_id": pid, "response": "Hi."}]))
    assert [r["prompt_id"] for r in store.list_responses(db)] == [pid]


HH = [
    {"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes.",
     "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Why would you want to do that?"},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a secret."
               "\n\nAssistant: I don't have secrets, but I can tell you a fun fact.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a secret."
                 "\n\nAssistant: Human: no"},
]


def transcript(prompt: list[dict], answer: str) -> str:
    turns = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in prompt)
    return f"{turns}\n\nAssistant: {answer}"


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_hh_round_trip_rebuilds_the_transcripts(db, tmp_path, file_type):
    result = formats.import_file(db, write_rows(tmp_path, "hh", HH, file_type))
    assert (result["format"], result["labels"]) == ("hh", 2)
    task = store.list_tasks(db)[0]
    assert task["response_ids"] == sorted(task["response_ids"])   # not chosen-first
    formats.export(db, "pairs", tmp_path / f"hh-out.{file_type}")
    rows = formats.read_records(tmp_path / "hh-out.jsonl")[0] if file_type == "jsonl" else None
    if rows is not None:
        rebuilt = sorted((transcript(r["prompt"], r["chosen"][0]["content"]),
                          transcript(r["prompt"], r["rejected"][0]["content"])) for r in rows)
        assert rebuilt == sorted((h["chosen"], h["rejected"]) for h in HH)
    with fresh(tmp_path, "again") as again:
        formats.import_file(again, tmp_path / f"hh-out.{file_type}")
        assert pair_content(again) == pair_content(db)


def test_csv_cells_parquet_structs_and_gzip_are_read(db, tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text('prompt,chosen,rejected,margin\n'
                    '"[{""role"": ""user"", ""content"": ""multi\nline""}]",good,bad,better\n'
                    'plain question,"yes, sure",no,\n', encoding="utf-8")
    assert formats.import_file(db, path)["labels"] == 2
    got = {p["chosen"]: p for p in store.pairs(db)}
    assert json.loads(got["good"]["prompt"]) == [{"content": "multi\nline", "role": "user"}]
    assert got["good"]["margin_level"] == "better" and got["yes, sure"]["margin_level"] is None

    gz = tmp_path / "prompts.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"prompt": "zipped"}\n'))
    assert formats.import_file(db, gz)["prompts"] == 1

    write_csv(tmp_path / "tags.csv", [{"prompt": "tagged", "tags": "a, b"}])
    formats.import_file(db, tmp_path / "tags.csv")
    assert [p["tags"] for p in store.list_prompts(db) if p["messages"][0]["content"] == "tagged"] == [["a", "b"]]


def test_reimporting_the_same_file_adds_nothing(db, tmp_path):
    files = [write_jsonl(tmp_path / "a.jsonl", PAIRS), write_jsonl(tmp_path / "b.jsonl", RANKINGS),
             write_jsonl(tmp_path / "c.jsonl", RESPONSES)]
    for f in files:
        formats.import_file(db, f)
    before = snapshot(db)
    for f in files:
        result = formats.import_file(db, f)
        assert (result["prompts"], result["responses"], result["tasks"], result["labels"]) == (0, 0, 0, 0)
    assert snapshot(db) == before


def test_duplicate_and_contradicting_rows(db, tmp_path):
    row = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    flipped = {"prompt": "Q", "chosen": "B", "rejected": "A"}
    result = formats.import_file(db, write_jsonl(tmp_path / "d.jsonl", [row, row, flipped, row]))
    assert (result["labels"], result["duplicate_rows"], result["contradicting_rows"]) == (2, 2, 1)
    assert "1 row contradicting an earlier row" in formats.describe_import(result)
    assert {lab["annotator"] for lab in store.label_history(db)} == {"d", "d#2"}
    assert store.pairs(db) == []     # one vote each way: no majority, no pair
    # a third vote tips it
    formats.import_file(db, write_jsonl(tmp_path / "e.jsonl", [row]))
    (pair,) = store.pairs(db)
    assert (pair["chosen"], pair["votes_chosen"], pair["n_labels"]) == ("A", 2, 3)


def test_rows_without_a_preference_are_skipped_and_reported(db, tmp_path):
    rows = [{"prompt": "Q", "chosen": "same", "rejected": "same"},
            {"prompt": "Q", "chosen": "  ", "rejected": "B"},
            {"prompt": "Q", "chosen": "A", "rejected": "B"}]
    result = formats.import_file(db, write_jsonl(tmp_path / "s.jsonl", rows))
    assert result["labels"] == 1 and result["skipped"] == 2
    assert result["skipped_rows"] == [{"line": 1, "reason": "chosen and rejected are the same text"},
                                      {"line": 2, "reason": "chosen response is empty"}]


def test_read_prompts_and_the_sample_project(db, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]},
                                              {"prompt": "a"}])
    assert formats.read_prompts(path) == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    from app import SAMPLE_PROJECT
    totals = formats.load_sample_project(db, SAMPLE_PROJECT)
    assert totals["prompts"] >= 3 and totals["tasks"] >= 3
    assert formats.load_sample_project(db, SAMPLE_PROJECT) == {"prompts": 0, "responses": 0, "tasks": 0}
