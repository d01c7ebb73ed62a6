"""TEMPORARY: read the shared HH file into PairExamples until ``annotate.formats`` lands on main.

Delete this file once ``annotate.trainingdata.from_file`` works; bench/rm.py then calls it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from annotate.trainingdata import PairExample, TrainingData, _hash

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _messages(transcript: str) -> list[dict]:
    parts = _TURN.split(transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()}
            for i in range(1, len(parts) - 1, 2)]


def read_hh(path: str | Path) -> TrainingData:
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        chosen, rejected = _messages(row["chosen"]), _messages(row["rejected"])
        if (len(chosen) < 2 or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant"
                or rejected[-1]["role"] != "assistant" or chosen[-1] == rejected[-1]):
            continue
        pairs.append(PairExample(prompt=chosen[:-1], chosen=chosen[-1]["content"],
                                 rejected=rejected[-1]["content"]))
    return TrainingData(pairs=pairs, data_hash=_hash([[p.prompt, p.chosen, p.rejected] for p in pairs]))
