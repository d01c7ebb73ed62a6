"""Labels for the Label Studio, Argilla and Hugging Face round trips: pairs and rankings by
several annotators, ties, margins, an AI judge's label and a dialogue prompt."""
from __future__ import annotations

import json

from annotate import formats, store
from formats_helpers import snapshot, write_jsonl

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "2"}, {"role": "user", "content": "Another?"}]
RANKINGS = [
    {"prompt": "Capital of France?", "responses": ["Paris.", "Lyon."], "ranking": [[0], [1]],
     "annotator": "alice", "margin": "better"},
    {"prompt": "Capital of France?", "responses": ["Paris.", "Lyon."], "ranking": [[1], [0]],
     "annotator": "bob"},
    {"prompt": "Capital of France?", "responses": ["Paris.", "Lyon."], "ranking": [[0, 1]],
     "annotator": "carol"},
    {"prompt": "Capital of France?", "responses": ["Paris.", "Lyon."], "ranking": [[0], [1]],
     "annotator": "judge-1", "source": "ai", "judge": "local:tiny", "soft_prob": 0.7,
     "rationale": "Paris is the capital.", "principle": "helpful"},
    {"prompt": "Rank these openings.", "responses": ["Once upon a time", "It was a dark night",
                                                      "Call me Ishmael"],
     "ranking": [[2], [0, 1]], "annotator": "alice", "round": 2},
    {"prompt": "Rank these openings.", "responses": ["Once upon a time", "It was a dark night",
                                                      "Call me Ishmael"],
     "ranking": [[2], [1], [0]], "annotator": "bob", "round": 2},
    {"prompt": CHAT, "responses": ["3", "Nine"], "ranking": [[0], [1]], "annotator": "bob",
     "margin": "significantly"},
]
PAIRS_ONLY = [RANKINGS[0], RANKINGS[1], RANKINGS[6]]


def load(db: store.Store, folder, rows=RANKINGS) -> dict:
    return formats.import_file(db, write_jsonl(folder / "labels.jsonl", rows))


def same_content(a: store.Store, b: store.Store) -> None:
    """Everything but the responses' generation metadata (the tools have no place for it)."""
    sa, sb = snapshot(a), snapshot(b)
    for table in ("prompts", "tasks", "labels"):
        assert sa[table] == sb[table], table
    assert [r[:3] for r in sa["responses"]] == [r[:3] for r in sb["responses"]]


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))
