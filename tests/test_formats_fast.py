"""The import fast path (annotate.formats.fast) writes exactly what the general parser writes.

Each file below is imported twice into fresh databases, once as ``import_file`` does by default
(fast path) and once with ``fast=False`` (general parser only); the results and every table must
be identical. Each file is also checked to really take the fast path, so the comparison is not
vacuous; files the fast path must leave alone are checked to do so.
"""
import json

import pytest

from annotate import formats, store
from annotate.formats import fast
from formats_helpers import write_jsonl, write_parquet

WS = " \t\u00a0\u2003"   # whitespace Python's strip() removes, some of it not ASCII
H = "\n\nHuman: "
A = "\n\nAssistant: "

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1},          # duplicate row
    {"prompt": "What is 2+2?", "chosen": "5", "rejected": "4"},                         # contradiction: #2
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": "slightly"},  # another: #3
    {"prompt": "What is 2+2?", "chosen": "5", "rejected": "4"},                         # same as #2
    {"prompt": "What is 2+2?", "chosen": "four", "rejected": "5", "round": 2},          # new task
    {"prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital?"}],
     "chosen": [{"role": "assistant", "content": "Paris"}],
     "rejected": [{"role": "assistant", "content": f"{WS}Lyon{WS}"}], "margin": 0.6},
    {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
    {"prompt": f"{WS}spaces kept in a prompt{WS}", "chosen": f"{WS}a{WS}", "rejected": "b",
     "margin": 0.5, "extra": 1},                                                       # ignored field
    {"prompt": "Q", "chosen": "", "rejected": "B"},                                     # skipped: empty
    {"prompt": "Q", "chosen": "same", "rejected": f"same{WS}"},                        # skipped: same
    {"prompt": "Q", "chosen": "A", "rejected": "B", "margin_level": None, "margin": 1},  # level wins
    {"prompt": "Q2", "chosen": "A", "rejected": "B", "margin_level": "negligibly"},
    {"prompt": "Q3", "chosen": "A", "rejected": "B", "margin": 1 / 6},                 # tie → stronger
    {"prompt": "Q4", "chosen": "A", "rejected": "B", "source": "ai", "soft_prob": 0.75,
     "judge": "local:tiny", "rationale": "A is right", "principle": "helpful"},
    {"prompt": "Q5", "chosen": "A", "rejected": "B", "source": "ai+human", "annotator": "alice",
     "votes_chosen": 2, "task_id": "from an export"},                                 # provenance
    {"prompt": "Q5", "chosen": "A", "rejected": "B", "annotator": "bob", "rationale": ""},
    {"prompt": "émoji 👍 \"quotes\" \\ back\\slash \u2028 \x7f\x01 中文", "chosen": "好", "rejected": "坏"},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "Four."},                    # shared response
]

HH = [
    {"chosen": f"{H}Hi{A}Hello!", "rejected": f"{H}Hi{A}Go away."},
    {"chosen": f"{H}Hi{A}Hello!", "rejected": f"{H}Hi{A}Go away."},                    # duplicate
    {"chosen": f"{H}Hi{A}Go away.", "rejected": f"{H}Hi{A}Hello!"},                    # contradiction
    {"chosen": f"{H}Plan a trip{A}Where to?{H}Rome{A}Start at the Colosseum.",
     "rejected": f"{H}Plan a trip{A}Where to?{H}Rome{A}No idea."},
    {"chosen": f"{H}Tell me{A}It is fine.  Human: then what?", "rejected": f"{H}Tell me{A}Nothing."},
    {"chosen": f"{H}Empty{A}", "rejected": f"{H}Empty{A}Something."},                 # skipped
    {"chosen": f"{H}Q{A}A  ", "rejected": f"{H}Q{A}A"},                                 # skipped: same
    {"chosen": f"{H}Q{A}A{A}more", "rejected": f"{H}Q{A}B"},   # an assistant turn inside a response
    {"chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}]},
    {"chosen": f"{H}M{A}a", "rejected": f"{H}M{A}b", "margin": "better", "round": 1, "x": None},
]

PROMPTS = [
    {"prompt": "Write a poem.", "tags": ["writing", " ", " poetry "]},
    {"prompt": "Write a poem.", "source": "other"},                                    # duplicate
    {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
     "source": "mine"},
    {"prompt": f"{WS}中文提示{WS}", "tags": []},
    {"prompt": "Untagged", "id": "ignored provenance", "note": "reported"},
]


def snapshot(db) -> dict:
    tables = {"prompts": "id", "responses": "id", "tasks": "id", "labels": "id"}
    return {t: [{k: v for k, v in r.items() if k != "created_at"}
                for r in db.query(f"SELECT * FROM {t} ORDER BY {key}")] for t, key in tables.items()}


def both_ways(tmp_path, path, **kw):
    out = {}
    for fast in (True, False):
        with store.Store(tmp_path / f"{path.stem}-{fast}.duckdb") as db:
            out[fast] = (formats.import_file(db, path, fast=fast, **kw), snapshot(db))
    return out


def takes_fast_path(db, path, fmt) -> bool:
    records, lines, text_cells = formats.read_records(path)
    ctx = formats.ParseContext(text_cells, "x", 0, 1, store.margin_levels(db), {})
    return fast.plain_rows(fmt, records, lines, ctx) is not None


@pytest.mark.parametrize("name,rows,fmt", [("pairs", PAIRS, "pairs"), ("hh", HH, "hh"),
                                           ("prompts", PROMPTS, "prompts")])
def test_fast_and_general_imports_write_the_same(db, tmp_path, name, rows, fmt):
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    assert takes_fast_path(db, path, fmt)
    got = both_ways(tmp_path, path, fmt=fmt, required_labels=2, round=3)
    assert got[True] == got[False]
    result, tables = got[True]
    assert tables["prompts"]
    if fmt != "prompts":
        assert result["duplicate_rows"] >= 1 and result["contradicting_rows"] >= 1
        assert result["skipped"] >= 2 and tables["labels"]


def test_fast_path_on_parquet_and_on_top_of_existing_rows(db, tmp_path):
    rows = [{**r, "margin": float(r["margin"]) if isinstance(r.get("margin"), (int, float)) else None}
            for r in PAIRS if isinstance(r.get("prompt"), str) and isinstance(r["chosen"], str)]
    path = write_parquet(tmp_path / "pairs.parquet", rows)
    assert takes_fast_path(db, path, "pairs")
    first = write_jsonl(tmp_path / "first.jsonl", PAIRS[:8])
    out = {}
    for fast in (True, False):
        with store.Store(tmp_path / f"p-{fast}.duckdb") as d:
            formats.import_file(d, first, source="pairs", fast=fast)   # overlaps: only new rows count
            out[fast] = (formats.import_file(d, path, source="other", fast=fast), snapshot(d))
    assert out[True] == out[False]
    assert out[True][0]["prompts"] < len({json.dumps(r["prompt"]) for r in rows})


def test_a_clash_with_stored_labels_names_the_same_line_both_ways(tmp_path):
    first = write_jsonl(tmp_path / "votes.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    second = write_jsonl(tmp_path / "votes2.jsonl", [{"prompt": "P", "chosen": "x", "rejected": "y"},
                                                     {"prompt": "Q", "chosen": "B", "rejected": "A"}])
    messages = set()
    for fast in (True, False):
        with store.Store(tmp_path / f"c-{fast}.duckdb") as d:
            formats.import_file(d, first, fast=fast)
            before = snapshot(d)
            with pytest.raises(formats.FormatError) as err:
                formats.import_file(d, second, source="votes", fast=fast)
            assert snapshot(d) == before
            messages.add(str(err.value))
    (message,) = messages
    assert ":2: annotator: task" in message and "already has a different label by 'votes'" in message


@pytest.mark.parametrize("row", [
    {"prompt": "Q", "chosen": "A", "rejected": "B", "margin": "huge"},
    {"prompt": 3, "chosen": "A", "rejected": "B"},
    {"prompt": "  ", "chosen": "A", "rejected": "B"},
    {"prompt": "Q", "chosen": ["A"], "rejected": "B"},
    {"prompt": "Q", "chosen": "A", "rejected": "B", "annotator": 5},
    {"prompt": "Q", "chosen": "A", "rejected": "B", "soft_prob": 1.5},
    {"prompt": [{"role": "assistant", "content": "Q"}], "chosen": "A", "rejected": "B"},
])
def test_rows_the_fast_path_leaves_to_the_general_parser(db, tmp_path, row):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "fine", "chosen": "A", "rejected": "B"}, row])
    assert not takes_fast_path(db, path, "pairs")
    with pytest.raises(formats.FormatError, match=r"odd\.jsonl:2: "):
        formats.import_file(db, path)
    assert store.counts(db) == {"prompts": 0, "responses": 0, "tasks": 0, "labels": 0}


def test_a_second_different_label_by_an_explicit_annotator_is_left_to_the_general_parser(db, tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", [
        {"prompt": "Q", "chosen": "A", "rejected": "B", "annotator": "ann"},
        {"prompt": "Q", "chosen": "B", "rejected": "A", "annotator": "ann"}])
    assert not takes_fast_path(db, path, "pairs")
    with pytest.raises(formats.FormatError, match=r"two\.jsonl:2: annotator: a second, different label"):
        formats.import_file(db, path)
