"""Anthropic HH-RLHF transcripts: splitting, and the real 1,500-pair file from ../shared/data."""
import json

import pytest

from annotate import formats, store


def test_split_transcripts_into_messages_and_two_responses():
    chosen = ("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What's 2+2?\n\nAssistant:  4, of course.")
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What's 2+2?\n\nAssistant: Five."
    messages, c, r = formats.split_transcripts(chosen, rejected)
    assert messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "What's 2+2?"}]
    assert (c, r) == ("4, of course.", "Five.")


def test_the_cut_is_the_last_assistant_turn_the_two_transcripts_share():
    # the chosen response runs on into a further turn without the usual blank line (a known
    # HH-RLHF artefact): the prompt must still end where the two transcripts part
    chosen = "\n\nHuman: Are cats nice?\n\nAssistant: Mostly.  Human: Really?\n\nAssistant: Yes."
    rejected = "\n\nHuman: Are cats nice?\n\nAssistant: No."
    messages, c, r = formats.split_transcripts(chosen, rejected)
    assert messages == [{"role": "user", "content": "Are cats nice?"}]
    assert c == "Mostly.  Human: Really?\n\nAssistant: Yes." and r == "No."


def test_the_real_hh_file_imports_cleanly_and_again_adds_nothing(db, hh_file):
    result = formats.import_file(db, hh_file, source="hh-rlhf")
    assert result["format"] == "hh" and result["rows"] == 1500
    # line 333's chosen answer is an empty assistant turn: no usable preference, skipped
    assert result["skipped_rows"] == [{"line": 333, "reason": "chosen response is empty"}]
    assert result["labels"] == 1499 and result["tasks"] == 1499
    assert result["duplicate_rows"] == 0 and result["contradicting_rows"] == 0
    again = formats.import_file(db, hh_file, source="hh-rlhf")
    assert (again["prompts"], again["responses"], again["tasks"], again["labels"]) == (0, 0, 0, 0)

    pairs = store.pairs(db)
    assert len(pairs) == 1499 and {p["source"] for p in pairs} == {"human"}
    assert {lab["annotator"] for lab in store.label_history(db)} == {"hh-rlhf"}
    # every exported pair rebuilds its original transcripts (up to whitespace)
    squash = lambda text: " ".join(text.split())
    originals = set()
    for line in hh_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        originals.add((squash(row["chosen"]), squash(row["rejected"])))
    role = {"user": "Human", "assistant": "Assistant"}
    for p in pairs:
        turns = "".join(f"\n\n{role[m['role']]}: {m['content']}" for m in json.loads(p["prompt"]))
        rebuilt = (squash(f"{turns}\n\nAssistant: {p['chosen']}"), squash(f"{turns}\n\nAssistant: {p['rejected']}"))
        assert rebuilt in originals
    multi_turn = sum(len(json.loads(p["prompt"])) > 1 for p in pairs)
    assert multi_turn > 700   # most HH dialogues have several turns
