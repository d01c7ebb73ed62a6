"""Malformed input of every format and file type is refused whole (issue 12).

Each case below is a file an import must refuse: truncated, binary, not UTF-8, nested too
deeply, lines over the limit, NaN/inf numbers, unknown ids, K = 1000, Parquet of the wrong
schema, empty, duplicate labels... The promise checked for every one: a ``FormatError`` that is
one line, ``FILE:LINE: FIELD: reason`` with the line and field the case names, and every table
of the store exactly as before. A representative subset goes through the real CLI
(``python app.py import FILE --db DB``): exit status 2, nothing on stdout, exactly that one
line on stderr. Byte-order marks, CRLF line ends and gzip must be accepted, and give what the
plain file gives.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate import formats, store
from annotate.formats import reading
from formats_helpers import full_dump, snapshot

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20
PAIR = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
RANK = {"prompt": "Rank these", "responses": ["a", "b", "c"], "ranking": [[0], [1], [2]]}
HH = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
CHAT = [{"role": "user", "content": "q"}]


def row(base: dict, **change) -> dict:
    out = {**base, **change}
    return {k: v for k, v in out.items() if v is not None}


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def deep(n: int, leaf: str = "1") -> str:
    """JSON text of ``n`` nested lists (json.dumps itself recurses too deeply for this)."""
    return "[" * n + leaf + "]" * n


def gz(content: str | bytes) -> bytes:
    return gzip.compress(content.encode() if isinstance(content, str) else content, compresslevel=1)


def parquet(**columns) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.table(columns), path)


def parquet_bytes(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def huge_line(size: int) -> Callable[[Path], None]:
    """A JSONL file of one line of ``size`` bytes, written in chunks (never whole in memory)."""
    def write(path: Path) -> None:
        head, tail = b'{"prompt": "', b'", "chosen": "a", "rejected": "b"}\n'
        with open(path, "wb") as f:
            f.write(head)
            left = size - len(head) - len(tail)
            while left > 0:
                f.write(b"a" * min(left, MB))
                left -= MB
            f.write(tail)
    return write


PNG = b"\x89PNG\r\n\x1a\n" + random.Random(0).randbytes(4000)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(64) + random.Random(1).randbytes(2000)
GOOD_PARQUET = parquet_bytes(prompt=["q"] * 50, chosen=[f"a{i}" for i in range(50)], rejected=["b"] * 50)
BIG_CELL = "x" * (17 * MB)


@dataclass
class Case:
    id: str
    name: str                              # file name (its suffix picks the reader)
    content: str | bytes | Callable[[Path], None]
    line: int | None                       # the line the message names (None: any)
    field: str                             # the field it names
    reason: str                            # a regex the reason must match
    fmt: str = "auto"

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if callable(self.content):
            self.content(path)
        elif isinstance(self.content, bytes):
            path.write_bytes(self.content)
        else:
            path.write_text(self.content, encoding="utf-8", newline="")
        return path


C = Case
CASES = [
    # -- empty, truncated, binary, not what the name says ------------------------------------
    C("empty jsonl", "e.jsonl", b"", 1, "(file)", "no rows to import"),
    C("blank lines only", "e.jsonl", "\n  \n\r\n", 1, "(file)", "no rows to import"),
    C("empty csv", "e.csv", b"", 1, "(file)", "no rows to import"),
    C("csv header only", "e.csv", "prompt,chosen,rejected\r\n", 1, "(file)", "no rows to import"),
    C("parquet of no rows", "e.parquet", parquet(prompt=pa.array([], pa.string())), 1, "(file)",
      "no rows to import"),
    C("zero-byte parquet", "e.parquet", b"", 1, "(file)", "not a readable Parquet file"),
    C("zero-byte gz", "e.jsonl.gz", b"", 1, "(file)", "no rows to import"),
    C("gz of nothing", "e.csv.gz", gz(b""), 1, "(file)", "no rows to import"),
    C("truncated gz", "t.jsonl.gz", gz(jsonl(*[PAIR] * 200))[:80], None, "(file)",
      "cannot read .*ended before the end-of-stream"),
    C("not gzip", "t.jsonl.gz", jsonl(PAIR), 1, "(file)", "cannot read .*Not a gzipped file"),
    C("truncated parquet", "t.parquet", GOOD_PARQUET[: len(GOOD_PARQUET) // 2], 1, "(file)",
      "not a readable Parquet file"),
    C("garbage parquet", "t.parquet", b"PAR1 this is not parquet PAR1", 1, "(file)",
      "not a readable Parquet file"),
    C("jsonl that is parquet", "t.jsonl", GOOD_PARQUET, 1, "(row)", "not valid JSON"),
    C("truncated jsonl", "t.jsonl", jsonl(PAIR, PAIR) + '{"prompt": "x", "chosen": ', 3, "(row)",
      "not valid JSON"),
    C("truncated csv (quote left open)", "t.csv", 'prompt,chosen,rejected\nq,a,"b', 2, "(row)",
      "malformed CSV"),
    C("truncated csv (short row)", "t.csv", "prompt,chosen,rejected\nq,a,b\nq,a", 3, "(row)",
      "2 cells, but the header names 3"),
    C("png as jsonl", "b.jsonl", PNG, 1, "(row)", r"not UTF-8 text \(byte 0x89 at offset 0\)"),
    C("png as csv", "b.csv", PNG, 1, "(row)", "not UTF-8 text"),
    C("png gzipped", "b.jsonl.gz", gz(PNG), 1, "(row)", "not UTF-8 text"),
    C("elf binary as jsonl", "b.jsonl", ELF, 1, "(row)", "a NUL byte at offset 7: binary data"),
    C("unknown file type", "data.txt", jsonl(PAIR), 1, "(file)", "unknown file type"),
    C("gzipped parquet", "data.parquet.gz", gz(GOOD_PARQUET), 1, "(file)", "unknown file type"),
    C("spreadsheet", "data.xlsx", b"PK\x03\x04" + bytes(40), 1, "(file)", "unknown file type"),
    # -- encodings ---------------------------------------------------------------------------
    C("latin-1 in jsonl", "l.jsonl", jsonl(PAIR).encode() + b'{"prompt": "caf\xe9", "chosen": "a", '
      b'"rejected": "b"}\n', 2, "(row)", r"not UTF-8 text \(byte 0xe9"),
    C("latin-1 in csv", "l.csv", b"prompt,chosen,rejected\nq,a,b\nq,\xe9t\xe9,b\n", 3, "(row)",
      r"not UTF-8 text \(byte 0xe9"),
    C("latin-1 in gz", "l.csv.gz", gz(b"prompt,chosen,rejected\nq,a,b\nq,\xe9,b\n"), 3, "(row)",
      "not UTF-8 text"),
    C("utf-16", "u.jsonl", jsonl(PAIR).encode("utf-16"), 1, "(row)", r"not UTF-8 text \(byte 0xff"),
    C("overlong utf-8", "u.jsonl", b'{"prompt": "\xc0\xaf", "chosen": "a", "rejected": "b"}\n', 1,
      "(row)", "not UTF-8 text"),
    C("NUL in csv", "n.csv", "prompt,chosen,rejected\nq\x00,a,b\n", 2, "(row)", "NUL byte"),
    C("NUL after a jsonl row", "n.jsonl", jsonl(PAIR) + jsonl(PAIR)[:-1] + "\x00\n", 2, "(row)",
      "NUL byte"),
    C("lone surrogate escape", "s.jsonl", '{"prompt": "a\\ud800b", "chosen": "x", "rejected": "y"}\n',
      1, "(row)", "not valid JSON"),
    # -- not one object per line ---------------------------------------------------------------
    C("a JSON array file", "a.jsonl", json.dumps([PAIR, PAIR]) + "\n", 1, "(row)",
      "expected an object, got list"),
    C("a number row", "a.jsonl", jsonl(PAIR, "42"), 2, "(row)", "expected an object, got int"),
    C("a null row", "a.jsonl", jsonl(PAIR, "null"), 2, "(row)", "expected an object, got NoneType"),
    C("a string row", "a.jsonl", jsonl('"hello"'), 1, "(row)", "expected an object, got str"),
    C("two objects on a line", "a.jsonl", json.dumps(PAIR) * 2 + "\n", 1, "(row)", "not valid JSON"),
    C("trailing comma", "a.jsonl", '{"prompt": "q", "chosen": "a", "rejected": "b",}\n', 1, "(row)",
      "not valid JSON"),
    C("python dict", "a.jsonl", "{'prompt': 'q', 'chosen': 'a', 'rejected': 'b'}\n", 1, "(row)",
      "not valid JSON"),
    C("csv row too long", "a.csv", "prompt,chosen,rejected\nq,a,b,c\n", 2, "(row)",
      "4 cells, but the header names 3"),
    C("csv duplicate column", "a.csv", "prompt,prompt\nq,r\n", 1, "(header)", "unique and non-empty"),
    C("csv empty column name", "a.csv", "prompt,,rejected\nq,a,b\n", 1, "(header)",
      "unique and non-empty"),
    C("csv stray quote", "a.csv", 'prompt,chosen,rejected\nq,"a"x,b\n', 2, "(row)", "malformed CSV"),
    C("format cannot be told", "a.jsonl", jsonl({"question": "q"}), 1, "(row)",
      "cannot tell the format from the fields question"),
    C("parquet of unknown columns", "a.parquet", parquet(x=[1, 2]), 2, "(row)",
      "cannot tell the format from the fields x"),
    # -- deep nesting --------------------------------------------------------------------------
    C("100k-deep jsonl", "d.jsonl", deep(100_000) + "\n", 1, "(row)", "not valid JSON"),
    C("1000-deep prompt", "d.jsonl", '{"prompt": ' + deep(1000, '"x"') + ', "chosen": "a", "rejected": "b"}\n',
      1, "prompt", r"messages\[0\] must be an object"),
    C("1000-deep gen_params", "d.jsonl",
      '{"prompt": "q", "response": "r", "gen_params": {"a": ' + deep(1000) + "}}\n", 1,
      r"response[0].gen_params", "more than 32 levels deep"),
    C("5000-deep csv ranking", "d.csv", 'prompt,responses,ranking\nq,"[""a"",""b""]",' + deep(5000, "") + "\n",
      2, "ranking", r"not valid JSON \(nested too deeply\)"),
    C("5000-deep csv gen_params", "d.csv", "prompt,response,gen_params\nq,r," + deep(5000, "") + "\n", 2,
      "response[0].gen_params", "nested too deeply"),
    C("5000-deep csv tags", "d.csv", "prompt,tags\nq," + deep(5000, "") + "\n", 2, "tags",
      "nested too deeply"),
    C("40-deep parquet gen_params", "d.parquet",
      parquet(prompt=["q"], response=["r"], gen_params=['{"a": ' + deep(40) + "}"]), 2,
      "response[0].gen_params", "more than 32 levels deep"),
    # -- huge lines (the limit is 16 MiB a line, enforced while reading) ----------------------
    C("50 MB single line", "h.jsonl", huge_line(50 * MB), 1, "(row)",
      "longer than the 16 MiB limit on one line"),
    C("17 MiB line after a good one", "h.jsonl",
      lambda p: (huge_line(17 * MB)(p), p.write_bytes(jsonl(PAIR).encode() + p.read_bytes())), 2,
      "(row)", "16 MiB limit"),
    C("17 MiB csv cell", "h.csv", "prompt,chosen,rejected\nq,a," + BIG_CELL + "\n", 2, "(row)",
      "16 MiB limit"),
    C("50 MB line gzipped", "h.jsonl.gz", lambda p: p.write_bytes(gz(b"[" + b" " * (50 * MB) + b"]\n")),
      1, "(row)", "16 MiB limit"),
    C("17 MiB parquet row", "h.parquet", parquet(prompt=["q", "q2"], chosen=["a", BIG_CELL],
                                                 rejected=["b", "c"]), 3, "(row)",
      "larger than the 16 MiB limit on one row"),
    # -- NaN, infinity, numbers out of range ---------------------------------------------------
    C("NaN margin (jsonl)", "m.jsonl", jsonl(PAIR)[:-2] + ', "margin": NaN}\n', 1, "(row)", "not valid JSON"),
    C("Infinity margin (jsonl)", "m.jsonl", jsonl(PAIR)[:-2] + ', "margin": Infinity}\n', 1, "(row)",
      "not valid JSON"),
    C("1e400 margin (jsonl)", "m.jsonl", jsonl(PAIR)[:-2] + ', "margin": 1e400}\n', 1, "(row)",
      "not valid JSON"),
    C("nan margin (csv)", "m.csv", "prompt,chosen,rejected,margin\nq,a,b,0.5\nq2,a,b,nan\n", 3, "margin",
      "must be a finite number, not nan"),
    C("inf margin (csv)", "m.csv", "prompt,chosen,rejected,margin\nq,a,b,inf\n", 2, "margin", "finite"),
    C("-Infinity margin (csv)", "m.csv", "prompt,chosen,rejected,margin\nq,a,b,-Infinity\n", 2,
      "margin", "finite"),
    C("nan soft_prob (csv)", "m.csv", "prompt,chosen,rejected,soft_prob\nq,a,b,NaN\n", 2, "soft_prob",
      "finite"),
    C("nan margin (parquet)", "m.parquet", parquet(prompt=["q"], chosen=["a"], rejected=["b"],
                                                  margin=[float("nan")]), 2, "margin", "finite"),
    C("inf soft_prob (parquet)", "m.parquet", parquet(prompt=["q"], chosen=["a"], rejected=["b"],
                                                     soft_prob=[float("inf")]), 2, "soft_prob", "finite"),
    C("'NaN' margin text (hh)", "m.jsonl", jsonl(row(HH, margin="NaN")), 1, "margin",
      "must be a number or one of"),
    C("negative margin", "m.jsonl", jsonl(row(PAIR, margin=-0.5)), 1, "margin", "must be >= 0"),
    C("boolean margin", "m.jsonl", jsonl(row(PAIR, margin=True)), 1, "margin", "finite number, not True"),
    C("soft_prob 1.5", "m.jsonl", jsonl(row(PAIR, soft_prob=1.5)), 1, "soft_prob", r"probability in \[0, 1\]"),
    C("round 1e30", "r.jsonl", jsonl(row(PAIR, round=1e30)), 1, "round", "integer from 0 to 2147483647"),
    C("round of 21 digits", "r.jsonl", jsonl(row(PAIR, round=123456789012345678901)), 1, "round",
      "integer from 0 to"),
    C("round 2**40 (parquet)", "r.parquet", parquet(prompt=["q"], chosen=["a"], rejected=["b"],
                                                   round=pa.array([2**40], pa.int64())), 2, "round",
      "integer from 0 to"),
    C("round 1e30 (rankings)", "r.jsonl", jsonl(row(RANK, round=1e30)), 1, "round", "integer from 0 to"),
    C("round 3.5 (csv)", "r.csv", "prompt,chosen,rejected,round\nq,a,b,3.5\n", 2, "round", "integer"),
    C("round true", "r.jsonl", jsonl(row(PAIR, round=True)), 1, "round", "finite number, not True"),
    # -- fields of the wrong type or shape -----------------------------------------------------
    C("prompt a number", "f.jsonl", jsonl(row(PAIR, prompt=7)), 1, "prompt", "not int"),
    C("prompt of an unknown role", "f.jsonl", jsonl(row(PAIR, prompt=[{"role": "bot", "content": "hi"}])), 1,
      "prompt", "role must be one of"),
    C("prompt ending with the assistant", "f.jsonl",
      jsonl(row(PAIR, prompt=CHAT + [{"role": "assistant", "content": "a"}])), 1, "prompt",
      "must end with a 'user' turn"),
    C("empty prompt", "f.jsonl", jsonl(row(PAIR, prompt="")), 1, "prompt", "non-empty string"),
    C("empty message list", "f.jsonl", jsonl(row(PAIR, prompt=[])), 1, "prompt", "non-empty list"),
    C("rejected missing", "f.jsonl", jsonl(PAIR, row(PAIR, rejected=None)), 2, "rejected", "missing"),
    C("chosen an object", "f.jsonl", jsonl(row(PAIR, chosen={"text": "4"})), 1, "chosen", "not dict"),
    C("completion of two messages", "f.jsonl",
      jsonl(row(PAIR, chosen=[{"role": "assistant", "content": "4"}] * 2)), 1, "chosen",
      "exactly one assistant message"),
    C("implicit prompt, content an object", "f.jsonl",
      jsonl({"chosen": CHAT + [{"role": "assistant", "content": {"x": 1}}],
             "rejected": CHAT + [{"role": "assistant", "content": "b"}]}), 1, "chosen",
      "content must be text"),
    C("annotator a number", "f.jsonl", jsonl(row(PAIR, annotator=5)), 1, "annotator", "must be text"),
    C("annotator blank", "f.jsonl", jsonl(row(PAIR, annotator="   ")), 1, "annotator", "non-empty name"),
    C("unknown label source", "f.jsonl", jsonl(row(PAIR, source="crowd")), 1, "source", "human or ai"),
    C("judge a list", "f.jsonl", jsonl(row(PAIR, judge=["x"])), 1, "judge", "must be text"),
    C("unknown margin level", "f.csv", "prompt,chosen,rejected,margin_level\nq,a,b,enormous\n", 2,
      "margin_level", "must be one of"),
    C("prompt an int64 column (parquet)", "f.parquet", parquet(prompt=[1], chosen=["a"], rejected=["b"]),
      2, "prompt", "not int"),
    C("prompt as binary (parquet)", "f.parquet", parquet(prompt=[b"q"], chosen=[b"a"], rejected=[b"b"]),
      2, "prompt", "not bytes"),
    C("messages without content (parquet)", "f.parquet",
      parquet(prompt=[[{"role": "user"}]], chosen=["a"], rejected=["b"]), 2, "prompt",
      "exactly 'role' and 'content'"),
    C("margin a timestamp (parquet)", "f.parquet",
      parquet(prompt=["q"], chosen=["a"], rejected=["b"], margin=pa.array([0], pa.timestamp("s"))), 2,
      "margin", "finite number"),
    # -- hh ------------------------------------------------------------------------------------
    C("hh without a shared turn", "hh.jsonl",
      jsonl({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}), 1,
      "chosen", "share no"),
    C("hh chosen a number", "hh.jsonl", jsonl({"chosen": 1, "rejected": "x"}), 1, "chosen",
      "transcript string, not int", "hh"),
    C("hh not a transcript", "hh.jsonl", jsonl({"chosen": "hello\n\nAssistant: a",
                                                "rejected": "hello\n\nAssistant: b"}), 1, "chosen",
      "starts with"),
    C("hh chats differing twice", "hh.jsonl",
      jsonl({"chosen": CHAT + [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]}), 1,
      "chosen", "differ only in their last"),
    C("hh csv without a shared turn", "hh.csv",
      'chosen,rejected\n"\n\nHuman: a\n\nAssistant: b","\n\nHuman: c\n\nAssistant: d"\n', 2, "chosen",
      "share no"),
    C("hh int64 columns (parquet)", "hh.parquet", parquet(chosen=[1], rejected=[2]), 2, "chosen",
      "not int", "hh"),
    # -- rankings ------------------------------------------------------------------------------
    C("K = 1000 ranking", "k.jsonl",
      jsonl(row(RANK, responses=[f"r{i}" for i in range(1000)], ranking=list(range(1000)))), 1,
      "responses", "a ranking compares 2 to 9 responses, not 1000"),
    C("K = 1 ranking", "k.jsonl", jsonl(row(RANK, responses=["a"], ranking=[[0]])), 1, "responses",
      "compares 2 to 9 responses, not 1"),
    C("ranking index out of range", "k.jsonl", jsonl(row(RANK, ranking=[[0], [1], [7]])), 1,
      r"ranking[2]", "out of range"),
    C("ranking missing", "k.jsonl", jsonl(RANK, row(RANK, ranking=None)), 2, "ranking", "missing",
      "rankings"),
    C("empty tie group", "k.jsonl", jsonl(row(RANK, ranking=[[0], [], [1, 2]])), 1, "ranking[1]",
      "non-empty list"),
    C("boolean index", "k.jsonl", jsonl(row(RANK, ranking=[[True], [1], [2]])), 1, "ranking[0]",
      "not a response index"),
    C("response ranked twice", "k.jsonl", jsonl(row(RANK, ranking=[[0], [0, 1], [2]])), 1, "ranking[1]",
      "appears twice"),
    C("ranking leaves one out", "k.jsonl", jsonl(row(RANK, ranking=[[0], [1]])), 1, "ranking",
      "leaves out response 2"),
    C("duplicate responses", "k.jsonl", jsonl(row(RANK, responses=["a", "b", "a"])), 1, "responses[2]",
      "repeats responses"),
    C("unknown task id", "k.jsonl", jsonl(RANK, {"task_id": "t-nope", "ranking": [[0], [1]]}), 2,
      "task_id", "unknown task id 't-nope'", "rankings"),
    C("task id a number", "k.jsonl", jsonl({"task_id": 5, "ranking": [[0], [1]]}), 1, "task_id",
      "unknown task id 5", "rankings"),
    C("unknown task kind", "k.jsonl", jsonl(row(RANK, kind="triplet")), 1, "kind", "pairwise or ranking"),
    C("csv ranking not JSON", "k.csv", 'prompt,responses,ranking\nq,"[""a"",""b""]",abc\n', 2, "ranking",
      "not valid JSON"),
    C("parquet ranking as text", "k.parquet",
      parquet(prompt=["q"], responses=[["a", "b"]], ranking=["[[0], [1]]"]), 2, "ranking",
      "must be a list of tie groups, not str"),
    C("soft_prob on a ranking of 3", "k.jsonl", jsonl(row(RANK, soft_prob=0.5)), 1, "soft_prob",
      "pairwise tasks only"),
    # -- responses -----------------------------------------------------------------------------
    C("K = 1000 responses", "p.jsonl", jsonl({"prompt": "q", "responses": [f"r{i}" for i in range(1000)]}),
      1, "responses", "holds 1000 responses; a row holds at most 256"),
    C("K = 1000 responses as a ranking task", "p.jsonl",
      jsonl({"prompt": "q", "responses": [f"r{i}" for i in range(1000)], "task": "ranking"}), 1,
      "responses", "at most 256"),
    C("K = 10 ranking task", "p.jsonl",
      jsonl({"prompt": "q", "responses": [f"r{i}" for i in range(10)], "task": "ranking"}), 1, "kind",
      "compares 2 to 9 responses, not 10"),
    C("unknown prompt id", "p.jsonl", jsonl({"prompt": "p", "response": "r"},
                                            {"prompt_id": "0123456789abcdef", "response": "r"}), 2,
      "prompt_id", "unknown prompt id '0123456789abcdef'", "responses"),
    C("prompt id a number", "p.jsonl", jsonl({"prompt_id": 5, "response": "r"}), 1, "prompt_id",
      "must be text, not int", "responses"),
    C("response and responses", "p.jsonl", jsonl({"prompt": "q", "response": "r", "responses": ["s"]}), 1,
      "response", "not both"),
    C("no responses", "p.jsonl", jsonl({"prompt": "q", "responses": []}), 1, "responses", "is empty"),
    C("blank response", "p.jsonl", jsonl({"prompt": "q", "responses": ["a", " "]}), 1, "responses[1]",
      "non-empty string"),
    C("gen_params a list", "p.jsonl", jsonl({"prompt": "q", "responses": [{"text": "a", "gen_params": [1]}]}),
      1, "responses[0].gen_params", "must be an object, not list"),
    C("pairwise task of three", "p.jsonl", jsonl({"prompt": "q", "responses": ["a", "b", "c"],
                                                  "task": "pairwise"}), 1, "task", "exactly 2 responses"),
    C("model a number", "p.jsonl", jsonl({"prompt": "q", "response": "r", "model": 5}), 1,
      "response[0].model", "must be text"),
    C("responses of int64 (parquet)", "p.parquet", parquet(prompt=["q"], responses=[[1, 2]]), 2,
      "responses[0]", "not int"),
    C("responses cell an object (csv)", "p.csv", 'prompt,responses\nq,"{""a"": 1}"\n', 2, "responses",
      "must be a list, not dict"),
    C("bad responses row in a gz", "p.jsonl.gz",
      gz(jsonl(*[{"prompt": f"q{i}", "response": "r"} for i in range(50)], {"prompt": "q", "response": 3})),
      51, "response[0]", "must be text or an object"),
    # -- prompts -------------------------------------------------------------------------------
    C("tags an object", "t.jsonl", jsonl({"prompt": "q", "tags": {"a": 1}}), 1, "tags", "list of strings"),
    C("tags holding a number", "t.jsonl", jsonl({"prompt": "q", "tags": ["a", 2]}), 1, "tags",
      "list of strings"),
    C("prompts row without a prompt", "t.jsonl", jsonl({"prompt": "q"}, {"source": "x"}), 2, "prompt",
      "missing", "prompts"),
    C("csv tags not JSON", "t.csv", "prompt,tags\nq,[a\n", 2, "tags", "not valid JSON"),
    C("parquet tags of int64", "t.parquet", parquet(prompt=["q"], tags=[[1, 2]]), 2, "tags",
      "list of strings"),
    C("prompt source a number", "t.jsonl", jsonl({"prompt": "q", "source": 3}), 1, "source", "must be text",
      "prompts"),
    # -- duplicate and contradicting labels ----------------------------------------------------
    C("one annotator, two labels", "dup.jsonl",
      jsonl(row(RANK, annotator="alice"), row(RANK, annotator="alice", ranking=[[2], [1], [0]])), 2,
      "annotator", "a second, different label by 'alice'"),
    C("one annotator, two pair labels", "dup.jsonl",
      jsonl(row(PAIR, annotator="bob"), row(PAIR, annotator="bob", chosen="5", rejected="4")), 2,
      "annotator", "a second, different label by 'bob'"),
    C("contradicting an earlier import", "votes.jsonl", jsonl({"prompt": "Q", "chosen": "B", "rejected": "A"}),
      1, "annotator", "already has a different label by 'votes'"),
    C("bad row after 5000 good ones", "late.jsonl",
      jsonl(*[row(PAIR, prompt=f"question {i}") for i in range(5000)], row(PAIR, chosen=None)), 5001,
      "chosen", "missing"),
    C("bad row after 1000 good ones (csv.gz)", "late.csv.gz",
      gz("prompt,chosen,rejected\n" + "".join(f"q{i},a,b\n" for i in range(1000)) + "q,,\n"), 1002,
      "chosen", "missing"),
]


# -- Label Studio JSON exports and Argilla datasets (issue 16) ----------------------------------
def ls_file(*tasks) -> str:
    """A Label Studio export with one task per line: task i starts on line i + 2."""
    return "[\n" + ",\n".join(t if isinstance(t, str) else json.dumps(t) for t in tasks) + "\n]\n"


def ls_task(selected="left", user=1, **data) -> dict:
    result = {"from_name": "comparison", "to_name": "comparison", "type": "pairwise",
              "value": {"selected": selected}}
    return {"data": {"prompt": "Q?", "answer1": "A", "answer2": "B", **data},
            "annotations": [{"completed_by": user, "was_cancelled": False, "result": [result]}]}


LS_RANKER = {"data": {"prompt": "Rank", "items": [{"id": "a", "body": "x"}, {"id": "b", "body": "y"}]},
             "annotations": [{"completed_by": 1, "result": [{"from_name": "rank", "type": "ranker",
                                                             "value": {"ranker": {"best": ["a", "zz"]}}}]}]}
ARGILLA_SETTINGS = {"fields": [{"name": n, "settings": {"type": "text"}} for n in ("prompt", "r1", "r2", "r3")],
                    "questions": [{"name": "rank", "settings": {"type": "ranking", "options": [
                        {"value": v} for v in ("r1", "r2", "r3")]}}]}


def argilla(*responses, fields=None) -> Callable[[Path], None]:
    """An rg.Dataset.to_disk folder with one record; the case's path is its records.json."""
    def write(path: Path) -> None:
        (path.parent / ".argilla").mkdir(parents=True)
        (path.parent / ".argilla" / "settings.json").write_text(json.dumps(ARGILLA_SETTINGS))
        rec = {"id": "x", "fields": fields or {"prompt": "Q", "r1": "a", "r2": "b", "r3": "c"},
               "responses": {"rank": [{"user_id": "u1", "status": "submitted", **r} for r in responses]}}
        path.write_text(json.dumps([rec]))
    return write


def empty_folder(path: Path) -> None:
    path.mkdir()


CASES += [
    C("ls truncated", "ls.json", ls_file(ls_task(), ls_task())[:-30], 3, "(row)", "not valid JSON",
      fmt="labelstudio"),
    C("ls empty list", "ls.json", "[]", 1, "(file)", "no tasks to import", fmt="labelstudio"),
    C("ls not UTF-8", "ls.json", ls_file(ls_task()).encode().replace(b"Q?", b"Q\xe9"), 2, "(row)",
      "not UTF-8", fmt="labelstudio"),
    C("ls task not an object", "ls.json", ls_file(ls_task(), "[1, 2]"), 3, "(row)", "a task is an object",
      fmt="labelstudio"),
    C("ls selected neither", "ls.json", ls_file(ls_task(), ls_task("middle")), 3,
      "annotations[0].result[0].value.selected", "must be 'left' or 'right'", fmt="labelstudio"),
    C("ls no prompt", "ls.json", ls_file(ls_task(prompt=None)), 2, "data.prompt", "missing",
      fmt="labelstudio"),
    C("ls no annotator", "ls.json", ls_file(ls_task(user=None)), 2, "annotations[0].completed_by",
      "missing", fmt="labelstudio"),
    C("ls same answer twice", "ls.json", ls_file(ls_task(answer2="A")), 2, "data.answer2",
      "repeats data.answer1", fmt="labelstudio"),
    C("ls ranker unknown item", "ls.json", ls_file(ls_task(), LS_RANKER), 3,
      "annotations[0].result[0].value.ranker.best", "names an unknown item 'zz'", fmt="labelstudio"),
    C("ls one annotator twice", "ls.json", ls_file({**ls_task(), "annotations": ls_task()["annotations"]
                                                    + ls_task("right")["annotations"]}), 2,
      "annotator", "a second, different label by 'ls-user-1'", fmt="labelstudio"),
    C("argilla truncated records", "ds/records.json",
      lambda p: (argilla({"value": ["r1", "r2", "r3"]})(p), p.write_text(p.read_text()[:-5])), 1,
      "(row)", "not valid JSON", fmt="argilla"),
    C("argilla unknown option", "ds/records.json", argilla({"value": ["r1", "r9", "r2"]}), 1,
      "records[0].responses.rank[0].value", "'r9' names no response", fmt="argilla"),
    C("argilla ranking leaves one out", "ds/records.json", argilla({"value": ["r1", "r2"]}), 1,
      "records[0].responses.rank[0].value", "must rank each of the 3 responses once", fmt="argilla"),
    C("argilla rank not a number", "ds/records.json",
      argilla({"value": [{"value": "r1", "rank": "first"}, {"value": "r2", "rank": 2}, {"value": "r3", "rank": 3}]}),
      1, "records[0].responses.rank[0].value", "a rank must be a number", fmt="argilla"),
    C("argilla unknown status", "ds/records.json", argilla({"value": ["r1", "r2", "r3"], "status": "approved"}),
      1, "records[0].responses.rank[0].status", "must be one of submitted", fmt="argilla"),
    C("argilla no user", "ds/records.json", argilla({"value": ["r1", "r2", "r3"], "user_id": None}), 1,
      "records[0].responses.rank[0].user_id", "missing", fmt="argilla"),
    C("argilla no prompt field", "ds/records.json",
      argilla({"value": ["r1", "r2", "r3"]}, fields={"r1": "a", "r2": "b", "r3": "c"}), 1,
      "records[0].fields.prompt", "missing", fmt="argilla"),
    C("argilla same user twice", "ds/records.json",
      argilla({"value": ["r1", "r2", "r3"]}, {"value": ["r3", "r2", "r1"]}), 1,
      "records[0].responses.rank[1].user_id", "a second response by 'u1'", fmt="argilla"),
    C("argilla empty folder", "ds", empty_folder, 1, "(file)", "holds neither records.json",
      fmt="argilla"),
]

# Through the real CLI: one or more of every file type, format and kind of fault.
CLI_CASES = {"empty jsonl", "truncated jsonl", "truncated gz", "garbage parquet", "png as csv",
             "latin-1 in csv", "100k-deep jsonl", "5000-deep csv ranking", "50 MB single line",
             "nan margin (csv)", "nan margin (parquet)", "round 1e30", "hh chosen a number",
             "K = 1000 ranking", "K = 1000 responses", "unknown task id", "unknown prompt id",
             "prompt an int64 column (parquet)", "one annotator, two labels",
             "contradicting an earlier import", "csv tags not JSON", "ls selected neither",
             "ls truncated", "argilla unknown option", "argilla empty folder"}
assert CLI_CASES <= {c.id for c in CASES} and len({c.id for c in CASES}) == len(CASES)


def seed(db: store.Store, folder: Path) -> None:
    """Data of every kind, so 'unchanged' means something (votes.jsonl: the earlier import
    that one case contradicts)."""
    folder.mkdir(exist_ok=True)
    files = {"votes.jsonl": [{"prompt": "Q", "chosen": "A", "rejected": "B"}],
             "ranks.jsonl": [RANK], "hh.jsonl": [HH],
             "gen.jsonl": [{"prompt": "p", "responses": ["x", "y", "z", "w"], "model": "m"}],
             "prompts.jsonl": [{"prompt": "lonely", "tags": ["t"]}]}
    for name, rows in files.items():
        (folder / name).write_text(jsonl(*rows), encoding="utf-8")
        formats.import_file(db, folder / name)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("malformed")
    db = store.Store(folder / "seeded.duckdb")
    seed(db, folder / "seed")
    yield db
    db.close()


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("malformed-cli") / "cli.duckdb"
    with store.Store(path) as db:
        seed(db, path.parent / "seed")
    return path


def check_message(message: str, path: Path, case: Case) -> None:
    assert "\n" not in message and len(message) < 1000, message
    match = re.fullmatch(rf"{re.escape(str(path))}:(\d+): (\S+): (.+)", message)
    assert match, message
    line, field, reason = match.groups()
    assert case.line is None or int(line) == case.line, message
    assert field == case.field, message
    assert re.search(case.reason, reason), message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_refused_whole(seeded, tmp_path, case):
    path = case.write(tmp_path)
    before = full_dump(seeded)
    with pytest.raises(formats.FormatError) as err:
        formats.import_file(seeded, path, fmt=case.fmt)
    check_message(str(err.value), path, case)
    assert full_dump(seeded) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.id in CLI_CASES],
                         ids=[c.id for c in CASES if c.id in CLI_CASES])
def test_the_cli_refuses_with_exit_2_and_one_line(cli_db, tmp_path, case):
    path = case.write(tmp_path)
    with store.Store(cli_db, read_only=True) as db:
        before = full_dump(db)
    argv = [sys.executable, str(ROOT / "app.py"), "import", str(path), "--db", str(cli_db)]
    done = subprocess.run(argv + (["--format", case.fmt] if case.fmt != "auto" else []),
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stderr.endswith("\n"), done.stderr
    assert lines[0].startswith("prefstudio import: ")
    check_message(lines[0][len("prefstudio import: "):], path, case)
    with store.Store(cli_db, read_only=True) as db:
        assert full_dump(db) == before


def test_the_limits_hold_exactly_at_their_edge(db, tmp_path, monkeypatch):
    """A line of exactly MAX_LINE_BYTES (its line break included) is read; one byte more is not.
    A file over MAX_FILE_BYTES is refused by its size, a gzip by what it decompresses to."""
    monkeypatch.setattr(reading, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(reading, "MAX_FILE_BYTES", 64 * 1024)
    head, tail = '{"prompt": "', '", "chosen": "a", "rejected": "b"}\n'
    fits = tmp_path / "fits.jsonl"
    fits.write_text(head + "x" * (4096 - len(head) - len(tail)) + tail)
    assert fits.stat().st_size == 4096
    assert formats.import_file(db, fits)["labels"] == 1
    over = tmp_path / "over.jsonl"
    over.write_text(head + "y" * (4097 - len(head) - len(tail)) + tail)
    before = full_dump(db)
    with pytest.raises(formats.FormatError, match=r"over\.jsonl:1: \(row\): the line is longer than "
                                                   r"the 4 KiB limit on one line"):
        formats.import_file(db, over)
    rows = jsonl(*[row(PAIR, prompt=f"q{i}") for i in range(2000)])   # ~110 KB
    (tmp_path / "big.jsonl").write_text(rows)
    with pytest.raises(formats.FormatError, match=r"big\.jsonl:1: \(file\): the file is larger than "
                                                   r"the 64 KiB limit"):
        formats.import_file(db, tmp_path / "big.jsonl")
    (tmp_path / "bomb.jsonl.gz").write_bytes(gz(rows))               # ~10 KB compressed
    with pytest.raises(formats.FormatError, match=r"bomb\.jsonl\.gz:\d+: \(file\): the file holds more "
                                                   r"than the 64 KiB limit"):
        formats.import_file(db, tmp_path / "bomb.jsonl.gz")
    assert full_dump(db) == before


ACCEPTED_ROWS = [PAIR, row(PAIR, prompt="Deux", chosen="é", rejected="ü", margin=0.5),
                 row(PAIR, prompt="multi\nline", chosen="a, b", rejected='say "c"')]


def csv_text(rows: list[dict], newline: str) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(["prompt", "chosen", "rejected", "margin"])
    for r in rows:
        writer.writerow([r["prompt"], r["chosen"], r["rejected"], r.get("margin", "")])
    return buf.getvalue()


@pytest.mark.parametrize("name, content", [
    ("bom.jsonl", "\ufeff" + jsonl(*ACCEPTED_ROWS)),
    ("crlf.jsonl", jsonl(*ACCEPTED_ROWS).replace("\n", "\r\n")),
    ("bom-crlf.jsonl", "\ufeff" + jsonl(*ACCEPTED_ROWS).replace("\n", "\r\n")),
    ("bom.csv", "\ufeff" + csv_text(ACCEPTED_ROWS, "\n")),
    ("crlf.csv", csv_text(ACCEPTED_ROWS, "\r\n")),
    ("plain.jsonl.gz", gz(jsonl(*ACCEPTED_ROWS))),
    ("bom-crlf.csv.gz", gz("\ufeff" + csv_text(ACCEPTED_ROWS, "\r\n"))),
    ("no-final-newline.jsonl", jsonl(*ACCEPTED_ROWS)[:-1]),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_bom_crlf_and_gzip_are_accepted(tmp_path, name, content):
    """Each gives exactly what the plain LF, no-BOM JSONL of the same rows gives."""
    plain = tmp_path / "plain" / "rows.jsonl"
    plain.parent.mkdir()
    plain.write_text(jsonl(*ACCEPTED_ROWS), encoding="utf-8")
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    with store.Store(tmp_path / "a.duckdb") as a, store.Store(tmp_path / "b.duckdb") as b:
        got = formats.import_file(a, path, source="s")
        want = formats.import_file(b, plain, source="s")
        assert {k: got[k] for k in ("rows", "prompts", "responses", "tasks", "labels")} == \
               {k: want[k] for k in ("rows", "prompts", "responses", "tasks", "labels")} == \
               {"rows": 3, "prompts": 3, "responses": 6, "tasks": 3, "labels": 3}
        assert snapshot(a, prompt_source=True) == snapshot(b, prompt_source=True)
        texts = [json.dumps(m) for m in store.list_prompts(a)] + [r["text"] for r in store.list_responses(a)]
        assert not any("\ufeff" in t or "\r" in t for t in texts)
