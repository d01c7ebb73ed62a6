"""Label Studio: its JSON export (a list of tasks) of pairwise and ranker projects, in and out.

A task is ``{"id", "data": {...}, "annotations": [...], "predictions": [...]}``; each annotation
``{"completed_by", "was_cancelled", "result": [...]}`` gives one label:

- **Pairwise** template (``<Pairwise name="comparison" toName="answer1,answer2"/>``): a result
  ``{"type": "pairwise", "value": {"selected": "left" | "right"}}``; left and right are the two
  data fields ``toName`` names (``response_fields``, or the first of answer1/answer2,
  text1/text2, response1/response2, response_a/response_b, a/b that the task has).
- **Ranker** template (``<List name="items" value="$items"/><Ranker name="rank" toName="items"/>``):
  the items are ``data.items`` (``[{"id", "body" | "text" | "title"}]``) and a result
  ``{"type": "ranker", "value": {"ranker": {...}}}`` holds either the items' ids in the new order
  under the Ranker's own name, or buckets ``{bucket: [ids]}`` (``<Bucket>`` tags), best first:
  the items of one bucket are tied. Items left unsorted (the ``_`` column) make the annotation
  incomplete: it is skipped and reported, like a cancelled one.

The prompt is ``data.prompt`` (or ``prompt_field``): text, or a list of chat messages.
``completed_by`` is the annotator (a user id becomes ``ls-user-<id>``; an email or name is kept);
predictions become AI labels named by their ``model_version``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from .documents import read_json_list
from .errors import FieldError
from .interchange import (annotator_name, by_task, check_texts, export_extras, is_strict_pair,
                          label_record, prompt_value, read_extras, unlabelled_record)

PAIR_FIELDS = (("answer1", "answer2"), ("text1", "text2"), ("response1", "response2"),
               ("response_a", "response_b"), ("a", "b"))
ITEM_TEXT = ("body", "text", "title")
PAIRWISE_CONFIG = """<View>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="comparison" toName="answer1,answer2"/>
  <Text name="answer1" value="$answer1"/>
  <Text name="answer2" value="$answer2"/>
</View>"""


class Task:
    """One Label Studio task being read: its prompt and responses, found once, then its labels."""

    def __init__(self, task: Any, prompt_field: str | None, response_fields: list[str] | None):
        if not isinstance(task, dict):
            raise FieldError("(row)", f"a task is an object, not {type(task).__name__}")
        self.task = task
        data = task.get("data")
        if not isinstance(data, dict):
            raise FieldError("data", "missing" if data is None else f"must be an object, not {type(data).__name__}")
        self.data = data
        name = prompt_field or "prompt"
        if data.get(name) is None:
            raise FieldError(f"data.{name}", "missing (name the prompt's field with --prompt-field)")
        self.prompt = data[name]
        self.response_fields = response_fields
        self.pair: tuple[str, str] | None = None
        self.items: list[str] | None = None   # ranker item ids, in data order

    def pair_texts(self) -> list[str]:
        if self.pair is None:
            candidates = [tuple(self.response_fields)] if self.response_fields else PAIR_FIELDS
            self.pair = next((p for p in candidates if all(f in self.data for f in p)), None)
            if self.pair is None or len(self.pair) != 2:
                raise FieldError("data", "no two responses to compare (expected " +
                                 (" and ".join(self.response_fields or ()) if self.response_fields
                                  else "answer1 and answer2, or text1 and text2") + ")")
        return check_texts([self.data[f] for f in self.pair], [f"data.{f}" for f in self.pair])

    def item_texts(self) -> list[str]:
        key = (self.response_fields or ["items"])[0]
        items = self.data.get(key)
        if not isinstance(items, list):
            raise FieldError(f"data.{key}", "missing: a ranker task lists its items"
                             if items is None else f"must be a list of items, not {type(items).__name__}")
        ids, texts = [], []
        for j, item in enumerate(items):
            where = f"data.{key}[{j}]"
            if not isinstance(item, dict) or not isinstance(item.get("id"), (str, int)):
                raise FieldError(where, "an item is an object with an id")
            if str(item["id"]) in ids:
                raise FieldError(f"{where}.id", f"repeats the id {item['id']!r}")
            ids.append(str(item["id"]))
            texts.append(next((item[k] for k in ITEM_TEXT if item.get(k) is not None), None))
        self.items = ids
        return check_texts(texts, [f"data.{key}[{j}]" for j in range(len(items))])

    def records(self, skipped: list[str]) -> list[dict]:
        out = []
        for kind, key in (("annotations", "completed_by"), ("predictions", "model_version")):
            entries = self.task.get(kind) or []
            if not isinstance(entries, list):
                raise FieldError(kind, f"must be a list, not {type(entries).__name__}")
            for i, entry in enumerate(entries):
                where = f"{kind}[{i}]"
                if not isinstance(entry, dict):
                    raise FieldError(where, f"must be an object, not {type(entry).__name__}")
                if entry.get("was_cancelled"):
                    skipped.append(f"{where} was cancelled (skipped in Label Studio)")
                    continue
                record = self._label(entry, where, kind == "predictions", skipped)
                if record is not None:
                    out.append(record)
        if not out:   # nobody labelled it: still a task
            ranker = (len(self.response_fields) == 1 if self.response_fields else "items" in self.data)
            texts = self.item_texts() if ranker else self.pair_texts()
            out.append(unlabelled_record(self.prompt, texts))
        return out

    def _label(self, entry: dict, where: str, predicted: bool, skipped: list[str]) -> dict | None:
        results = entry.get("result")
        if not isinstance(results, list):
            raise FieldError(f"{where}.result", "missing" if results is None else "must be a list")
        found = [(j, r) for j, r in enumerate(results) if isinstance(r, dict)
                 and r.get("type") in ("pairwise", "ranker")]
        if not found:
            skipped.append(f"{where} has no pairwise or ranker result")
            return None
        if len(found) > 1:
            raise FieldError(f"{where}.result[{found[1][0]}]", "a second pairwise/ranker result "
                             "(one annotation gives one label)")
        j, result = found[0]
        value = result.get("value")
        field = f"{where}.result[{j}].value"
        if not isinstance(value, dict):
            raise FieldError(field, "missing" if value is None else "must be an object")
        if predicted:
            name = annotator_name(entry.get("model_version"), f"{where}.model_version")
            extras = {"source": "ai", "judge": name}
        else:
            name = annotator_name(entry.get("completed_by"), f"{where}.completed_by")
            extras = {}
        extras.update(read_extras(entry.get("prefstudio"), f"{where}.prefstudio"))
        if result["type"] == "pairwise":
            texts, groups = self.pair_texts(), _selected(value.get("selected"), f"{field}.selected")
        else:
            texts = self.item_texts()
            groups = _ranked(value.get("ranker"), self.items, result.get("from_name"), f"{field}.ranker")
            if groups is None:
                skipped.append(f"{where} leaves items unsorted")
                return None
        return label_record(self.prompt, texts, groups, name, extras)


def _selected(value: Any, field: str) -> list[list[int]]:
    if value not in ("left", "right"):
        raise FieldError(field, f"must be 'left' or 'right', not {value!r}")
    return [[0], [1]] if value == "left" else [[1], [0]]


def _ranked(value: Any, items: list[str], tag: Any, field: str) -> list[list[int]] | None:
    """Tie groups of item indices from a ranker value; None when some item is left unsorted."""
    if not isinstance(value, dict) or not value:
        raise FieldError(field, "must be an object of {bucket or ranker name: [item ids]}")
    index = {item: i for i, item in enumerate(items)}
    groups, seen = [], set()
    plain_order = len(value) == 1 and next(iter(value)) == tag   # List + Ranker, no buckets
    for bucket, ids in value.items():
        if not isinstance(ids, list):
            raise FieldError(f"{field}.{bucket}", "must be a list of item ids")
        if bucket == "_":
            if ids:
                return None
            continue
        group = []
        for item in ids:
            if str(item) not in index:
                raise FieldError(f"{field}.{bucket}", f"names an unknown item {item!r}")
            if str(item) in seen:
                raise FieldError(f"{field}.{bucket}", f"names item {item!r} twice")
            seen.add(str(item))
            group.append(index[str(item)])
        groups += [[i] for i in group] if plain_order else [group] if group else []
    if len(seen) != len(items):
        return None
    return groups


def read_tasks(path: Path, prompt_field: str | None = None,
               response_fields: list[str] | None = None) -> tuple[list[dict], list[int], list[dict], int]:
    """Rows for the general parser, their lines, the annotations skipped (with why), the tasks read."""
    tasks, lines = read_json_list(path)
    records, numbers, skipped = [], [], []
    for task, line in zip(tasks, lines):
        reasons: list[str] = []
        try:
            rows = Task(task, prompt_field, response_fields).records(reasons)
        except FieldError as err:
            raise err.at(path, line) from None
        records += rows
        numbers += [line] * len(rows)
        skipped += [{"line": line, "reason": r} for r in reasons]
    return records, numbers, skipped, len(tasks)


# --- export ----------------------------------------------------------------------------------

_USER_ID = re.compile(r"ls-user-(\d+)")


def _completed_by(name: str) -> int | str:
    match = _USER_ID.fullmatch(name)
    return int(match.group(1)) if match else name


def _entry(row: dict, result: dict, n: int) -> dict:
    extras = export_extras(row)
    if row["source"] == "ai":
        entry = {"model_version": row["annotator"], "result": [result]}
        extras.pop("source")   # a prediction is an AI label
        if extras.get("judge") == row["annotator"]:
            del extras["judge"]
    else:
        entry = {"id": n, "completed_by": _completed_by(row["annotator"]), "was_cancelled": False,
                 "result": [result]}
    if extras:
        entry["prefstudio"] = extras
    return entry


def _result(row: dict, pairwise: bool) -> dict:
    if pairwise:
        return {"from_name": "comparison", "to_name": "comparison", "type": "pairwise",
                "origin": "manual", "value": {"selected": "left" if row["ranking"][0] == [0] else "right"}}
    buckets = {f"rank_{g + 1}": [f"r{i}" for i in group] for g, group in enumerate(row["ranking"])}
    return {"from_name": "rank", "to_name": "items", "type": "ranker", "origin": "manual",
            "value": {"ranker": buckets}}


def ranker_config(k: int) -> str:
    buckets = "".join(f'\n    <Bucket name="rank_{g}" title="Rank {g}"/>' for g in range(1, k + 1))
    return (f'<View>\n  <Text name="prompt" value="$prompt"/>\n  <List name="items" value="$items" '
            f'title="Responses"/>\n  <Ranker name="rank" toName="items">{buckets}\n  </Ranker>\n</View>')


def write_tasks(rows: list[dict], out: Path) -> dict:
    """Label Studio tasks from ``rankings`` export rows: the Pairwise layout when every label
    orders two responses, otherwise the Ranker layout with one bucket per rank (ties share one).
    Returns the counts and the labeling config the file is for."""
    pairwise = all(is_strict_pair(r) for r in rows)
    tasks, n = [], 0
    for number, labels in enumerate(by_task(rows).values(), 1):
        first = labels[0]
        texts = [r["text"] for r in first["responses"]]
        data: dict[str, Any] = {"prompt": prompt_value(first["prompt"])}
        if pairwise:
            data.update(answer1=texts[0], answer2=texts[1])
        else:
            data["items"] = [{"id": f"r{i}", "body": t} for i, t in enumerate(texts)]
        task: dict[str, Any] = {"id": number, "data": data, "annotations": [], "predictions": []}
        for row in labels:
            n += 1
            task["predictions" if row["source"] == "ai" else "annotations"].append(
                _entry(row, _result(row, pairwise), n))
        tasks.append(task)
    out.write_bytes(orjson.dumps(tasks, option=orjson.OPT_INDENT_2))
    k = max((len(r["responses"]) for r in rows), default=2)
    return {"rows": n, "tasks": len(tasks),
            "label_config": PAIRWISE_CONFIG if pairwise else ranker_config(k)}
