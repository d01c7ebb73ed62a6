"""Bad input: one FormatError naming file, line and field, and the database exactly as before."""
import json

import pytest

from annotate import formats
from formats_helpers import full_dump, write_jsonl

GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
RANK = {"prompt": "Rank", "responses": ["a", "b", "c"], "ranking": [[0], [1], [2]]}


def jsonl(*rows):
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def ranking(**change):
    return {**RANK, **change}


def pair(**change):
    row = {**GOOD, **change}
    return {k: v for k, v in row.items() if v is not None}


# (case, file name, content, --format, expected message after "FILE:")
CASES = [
    ("invalid JSON", "bad.jsonl", jsonl(GOOD, GOOD, '{"prompt": "x", "chosen": '), "auto",
     r":3: \(row\): not valid JSON"),
    ("undecodable bytes", "bad.jsonl",
     jsonl(GOOD).encode() + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n', "auto",
     r":2: \(row\): not UTF-8 text \(byte 0xe9"),
    ("undecodable CSV", "bad.csv", b"prompt,chosen,rejected\nq,a,b\nq,\xff,b\n", "auto",
     r":3: \(row\): not UTF-8 text"),
    ("row is not an object", "bad.jsonl", jsonl(GOOD, '["a", "b"]'), "auto",
     r":2: \(row\): expected an object, got list"),
    ("missing field", "bad.jsonl", jsonl(GOOD, pair(rejected=None)), "auto", r":2: rejected: missing"),
    ("half a pair on the first row", "bad.jsonl", jsonl(pair(rejected=None), GOOD), "auto",
     r":1: rejected: missing"),
    ("wrong type", "bad.jsonl", jsonl(GOOD, pair(chosen=42)), "auto",
     r":2: chosen: must be text or a list of messages, not int"),
    ("unknown role", "bad.jsonl", jsonl(pair(prompt=[{"role": "bot", "content": "hi"}])), "auto",
     r":1: prompt: messages\[0\]\.role must be one of system, user, assistant, not 'bot'"),
    ("prompt ends with the assistant", "bad.jsonl",
     jsonl(GOOD, pair(prompt=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])),
     "auto", r":2: prompt: messages must end with a 'user' turn"),
    ("empty prompt", "bad.jsonl", jsonl(GOOD, pair(prompt="")), "auto",
     r":2: prompt: messages\[0\]\.content must be a non-empty string"),
    ("empty ranking", "bad.jsonl", jsonl(RANK, ranking(ranking=[])), "auto", r":2: ranking: is empty"),
    ("duplicate response in a ranking", "bad.jsonl", jsonl(ranking(responses=["a", "b", "a"])), "auto",
     r":1: responses\[2\]: repeats responses\[0\]"),
    ("response ranked twice", "bad.jsonl", jsonl(ranking(ranking=[[0], [0, 1], [2]])), "auto",
     r":1: ranking\[1\]: response 0 appears twice"),
    ("index out of range", "bad.jsonl", jsonl(ranking(ranking=[[0], [1], [5]])), "auto",
     r":1: ranking\[2\]: index 5 is out of range for 3 responses"),
    ("ranking leaves a response out", "bad.jsonl", jsonl(ranking(ranking=[[0], [1]])), "auto",
     r":1: ranking: leaves out response 2"),
    ("ranking holds text", "bad.jsonl", jsonl(ranking(ranking=[["a"], [1], [2]])), "auto",
     r":1: ranking\[0\]: holds 'a', not a response index"),
    ("too many responses", "bad.jsonl", jsonl(ranking(responses=list("abcdefghij"), ranking=list(range(10)))),
     "auto", r":1: responses: a ranking compares 2 to 9 responses, not 10"),
    ("unknown task kind", "bad.jsonl", jsonl(ranking(kind="triplet")), "auto",
     r":1: kind: task kind must be pairwise or ranking, not 'triplet'"),
    ("unknown task id", "bad.jsonl", jsonl(RANK, {"task_id": "nope", "ranking": [[0], [1]]}), "rankings",
     r":2: task_id: unknown task id 'nope'"),
    ("unknown prompt id", "bad.jsonl", jsonl({"prompt": "p", "response": "r"},
                                             {"prompt_id": "0123456789abcdef", "response": "r"}),
     "responses", r":2: prompt_id: unknown prompt id '0123456789abcdef'"),
    ("unknown margin level", "bad.jsonl", jsonl(GOOD, pair(margin="huge")), "auto",
     r":2: margin: must be a number or one of significantly, better, slightly, negligibly, not 'huge'"),
    ("negative margin", "bad.jsonl", jsonl(pair(margin=-1)), "auto", r":1: margin: must be >= 0"),
    ("margin of the wrong type", "bad.jsonl", jsonl(pair(margin=[1])), "auto",
     r":1: margin: must be a finite number, not \[1\]"),
    ("soft_prob out of range", "bad.jsonl", jsonl(pair(soft_prob=1.5)), "auto",
     r":1: soft_prob: must be a probability in \[0, 1\], not 1.5"),
    ("negative round", "bad.jsonl", jsonl(pair(round=-1)), "auto",
     r":1: round: must be an integer from 0 to 2147483647, not -1"),
    ("unknown label source", "bad.jsonl", jsonl(pair(source="crowd")), "auto",
     r":1: source: must be human or ai, not 'crowd'"),
    ("CSV row with too few cells", "bad.csv", "prompt,chosen,rejected\nq,a,b\nq,a\n", "auto",
     r":3: \(row\): 2 cells, but the header names 3"),
    ("corrupt Parquet", "bad.parquet", b"PAR1 this is not parquet", "auto", r":1: \(file\): not a readable Parquet file"),
    ("unknown file type", "bad.txt", "hello", "auto", r":1: \(file\): unknown file type"),
    ("empty file", "bad.jsonl", "\n\n", "auto", r":1: \(file\): no rows to import"),
    ("format cannot be told", "bad.jsonl", jsonl({"question": "q"}), "auto",
     r":1: \(row\): cannot tell the format from the fields question; pass --format"),
    ("same annotator twice", "bad.jsonl", jsonl(ranking(annotator="alice"),
                                                ranking(annotator="alice", ranking=[[2], [1], [0]])), "auto",
     r":2: annotator: a second, different label by 'alice' for the same task \(first on line 1\)"),
    ("pairwise task of three", "bad.jsonl", jsonl({"prompt": "p", "responses": ["a", "b", "c"], "task": "pairwise"}),
     "auto", r":1: task: a pairwise task needs exactly 2 responses, not 3"),
    ("unknown task value", "bad.jsonl", jsonl({"prompt": "p", "responses": ["a", "b"], "task": "triple"}),
     "auto", r":1: task: must be ranking, pairwise or none, not 'triple'"),
    ("empty response text", "bad.jsonl", jsonl({"prompt": "p", "responses": ["a", " "]}), "auto",
     r":1: responses\[1\]: text must be a non-empty string"),
    ("gen_params not an object", "bad.jsonl", jsonl({"prompt": "p", "responses": [{"text": "a", "gen_params": [1]}]}),
     "auto", r":1: responses\[0\]\.gen_params: must be an object, not list"),
    ("hh transcripts share no turn", "bad.jsonl",
     jsonl({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}), "auto",
     r":1: chosen: chosen and rejected share no '\\n\\nAssistant:' turn"),
    ("hh transcript of the wrong type", "bad.jsonl", jsonl({"chosen": 1, "rejected": "x"}), "hh",
     r":1: chosen: must be a transcript string, not int"),
    ("bad row after many good ones", "bad.jsonl",
     jsonl(*[pair(prompt=f"question {i}") for i in range(300)], pair(chosen=None)), "auto",
     r":301: chosen: missing"),
]


@pytest.fixture
def populated(db, tmp_path):
    """A database with data in it, so 'unchanged' means something."""
    seed = tmp_path / "seed"
    seed.mkdir()
    formats.import_file(db, write_jsonl(seed / "votes.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}]))
    formats.import_file(db, write_jsonl(seed / "ranks.jsonl", [RANK]))
    return db


@pytest.mark.parametrize("case,name,content,fmt,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(populated, tmp_path, case, name, content, fmt, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    before = full_dump(populated)
    with pytest.raises(formats.FormatError) as err:
        formats.import_file(populated, path, fmt=fmt)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert __import__("re").search(expected, message[len(str(path)):]), message
    assert full_dump(populated) == before


def test_a_contradicting_label_from_an_earlier_import_is_refused(populated, tmp_path):
    (tmp_path / "again").mkdir()
    flipped = write_jsonl(tmp_path / "again" / "votes.jsonl", [{"prompt": "Q", "chosen": "B", "rejected": "A"}])
    before = full_dump(populated)
    with pytest.raises(formats.FormatError,
                       match=r"votes\.jsonl:1: annotator: task '\w+' already has a different label by "
                             r"'votes'; import the file with another --source"):
        formats.import_file(populated, flipped)
    assert full_dump(populated) == before
    formats.import_file(populated, flipped, source="second-opinion")   # as another annotator: fine
    assert full_dump(populated) != before


def test_missing_file_and_bad_options(populated, tmp_path):
    with pytest.raises(formats.FormatError, match="no such file"):
        formats.import_file(populated, tmp_path / "absent.jsonl")
    path = write_jsonl(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(formats.FormatError, match="unknown format 'csv'"):
        formats.import_file(populated, path, fmt="csv")
    with pytest.raises(formats.FormatError, match="round must be a non-negative integer"):
        formats.import_file(populated, path, round=-2)


def test_bad_exports_write_nothing(populated, tmp_path):
    with pytest.raises(formats.FormatError, match="cannot export 'votes'"):
        formats.export(populated, "votes", tmp_path / "x.jsonl")
    with pytest.raises(formats.FormatError, match="unknown file type"):
        formats.export(populated, "pairs", tmp_path / "x.xlsx")
    with pytest.raises(formats.FormatError, match="--min-agreement applies to pairs only"):
        formats.export(populated, "labels", tmp_path / "x.jsonl", min_agreement=0.5)
    assert list(tmp_path.glob("x.*")) == []
