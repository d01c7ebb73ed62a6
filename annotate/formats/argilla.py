"""Argilla v2: a dataset as ``rg.Dataset.to_disk`` writes it, in and out; its Hub layout in.

``to_disk(path)`` writes ``path/.argilla/settings.json`` (fields and questions),
``path/.argilla/dataset.json`` and ``path/records.json`` (a JSON list of records
``{"id", "fields": {...}, "responses": {question: [{"value", "user_id", "status"}]},
"metadata", "suggestions", ...}``). ``to_hub`` writes the same settings and the records as a
``datasets`` Parquet dataset with the responses flattened into ``<question>.responses``,
``<question>.responses.users`` and ``<question>.responses.status`` columns. Either is read here
from the folder (or ``records.json`` given itself).

A record is one prompt and its responses. The responses are the fields a **RankingQuestion**'s
options name (``options: [{"value": "response1"}, ...]`` with record fields ``response1``...),
or the fields that **RatingQuestions** rate (a rating question is matched to the response field
its name contains: ``rating_response1``). The prompt is the field ``prompt`` or
``instruction`` (or ``prompt_field``). Every **submitted** response of a user is one label by
that user: a ranking value is a list of option values, best first, or ``[{"value", "rank"}]``
(rank 1 best; equal ranks are ties); ratings order the responses, higher first, equal ratings
tied. Draft and discarded responses are not labels (reported as skipped); a response without a
status (older SDKs do not write it) counts as submitted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from . import reading
from .documents import read_json_list
from .errors import FieldError, FormatError
from .interchange import (annotator_name, by_task, check_texts, export_extras, groups_by_rank,
                          label_record, prompt_value, read_extras, unlabelled_record)

STATUSES = ("submitted", "discarded", "draft", "pending")
PROMPT_FIELDS = ("prompt", "instruction")
QUESTION = "ranking"


class Settings:
    """The dataset's fields and its ranking and rating questions (from ``settings.json``)."""

    def __init__(self, fields: list[str] | None = None, questions: dict | None = None):
        self.fields = fields
        self.questions: dict[str, tuple[str, list[str]]] = questions or {}

    @classmethod
    def read(cls, path: Path) -> "Settings":
        if path.stat().st_size > reading.MAX_LINE_BYTES:
            raise FormatError(path, "the settings file is too large", 1, "(file)")
        try:
            raw = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as err:
            raise FormatError(path, f"not valid JSON ({str(err)[:120]})", 1, "(file)") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("fields"), list) \
                or not isinstance(raw.get("questions"), list):
            raise FormatError(path, "Argilla settings hold a list of fields and a list of questions",
                              1, "(file)")
        fields, questions = [], {}
        for kind, entries in (("fields", raw["fields"]), ("questions", raw["questions"])):
            for j, entry in enumerate(entries):
                name = entry.get("name") if isinstance(entry, dict) else None
                settings = entry.get("settings") if isinstance(entry, dict) else None
                if not isinstance(name, str) or not isinstance(settings, dict):
                    raise FormatError(path, "needs a name and settings", 1, f"{kind}[{j}]")
                if kind == "fields":
                    fields.append(name)
                    continue
                options = [o.get("value") for o in settings.get("options") or [] if isinstance(o, dict)]
                questions[name] = (settings.get("type"), [str(o) for o in options])
        return cls(fields, questions)

    def of_type(self, kind: str, responses: dict) -> list[str]:
        """Question names of a type; without settings, guessed from the response values."""
        if self.questions:
            return [q for q, (t, _) in self.questions.items() if t == kind]
        first = {q: v[0].get("value") for q, v in responses.items()
                 if isinstance(v, list) and v and isinstance(v[0], dict)}
        want = list if kind == "ranking" else int
        return [q for q, v in first.items() if isinstance(v, want) and not isinstance(v, bool)]


class Record:
    """One Argilla record being read: the prompt, the responses, then one label per user."""

    def __init__(self, rec: Any, where: str, settings: Settings, prompt_field: str | None):
        if not isinstance(rec, dict):
            raise FieldError(where, f"a record is an object, not {type(rec).__name__}")
        self.where, self.settings = where, settings
        self.fields = self._object(rec.get("fields"), "fields", required=True)
        self.responses = self._object(rec.get("responses"), "responses")
        metadata = self._object(rec.get("metadata"), "metadata")
        self.extras = _extras_by_user(metadata.get("prefstudio"), f"{where}.metadata.prefstudio")
        self.prompt_name = prompt_field or next((f for f in PROMPT_FIELDS if f in self.fields), None)
        if self.prompt_name is None or self.fields.get(self.prompt_name) is None:
            raise FieldError(f"{where}.fields.{self.prompt_name or 'prompt'}",
                             "missing (name the prompt's field with --prompt-field)")

    def _object(self, value: Any, name: str, required: bool = False) -> dict:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise FieldError(f"{self.where}.{name}", "missing" if value is None else
                             f"must be an object, not {type(value).__name__}")
        return value

    def rows(self, skipped: list[str]) -> list[dict]:
        ranking = self.settings.of_type("ranking", self.responses)
        ratings = self.settings.of_type("rating", self.responses)
        if ranking:
            names = self._ranked_fields(ranking[0])
        elif ratings:
            rated = {q: self._rated_field(q) for q in ratings}
            names = list(dict.fromkeys(rated.values()))
        else:
            raise FieldError(f"{self.where}.responses", "no RankingQuestion or RatingQuestion to read labels from")
        texts = check_texts([self.fields.get(f) for f in names], [f"{self.where}.fields.{f}" for f in names])
        prompt = self.fields[self.prompt_name]
        by_user = self._ranking_labels(ranking[0], names, skipped) if ranking else \
            self._rating_labels(rated, names, skipped)
        rows = [label_record(prompt, texts, groups, user, {**self.extras.get(user, {})})
                for user, groups in by_user.items()]
        return rows or [unlabelled_record(prompt, texts)]

    def _ranked_fields(self, question: str) -> list[str]:
        options = self.settings.questions.get(question, (None, []))[1]
        if not options:   # no settings: the fields other than the prompt
            options = [f for f in self.fields if f != self.prompt_name]
        names = [o for o in options if self.fields.get(o) is not None]
        if len(names) < 2:
            raise FieldError(f"{self.where}.fields", f"holds {len(names)} of the fields the ranking options "
                                                     f"name ({', '.join(options)}); a ranking needs 2")
        return names

    def _rated_field(self, question: str) -> str:
        names = [f for f in self.fields if f != self.prompt_name and f in question]
        if not names:
            raise FieldError(f"{self.where}.responses.{question}", "cannot tell which response the rating "
                             "question rates (name it after the field, e.g. rating_response1)")
        return max(names, key=len)

    def _submitted(self, question: str, skipped: list[str]):
        """(where, user, value) of each submitted response to ``question``."""
        entries = self.responses.get(question) or []
        if not isinstance(entries, list):
            raise FieldError(f"{self.where}.responses.{question}", "must be a list of responses")
        for j, entry in enumerate(entries):
            where = f"{self.where}.responses.{question}[{j}]"
            if not isinstance(entry, dict):
                raise FieldError(where, f"must be an object, not {type(entry).__name__}")
            status = entry.get("status") or "submitted"
            if status not in STATUSES:
                raise FieldError(f"{where}.status", f"must be one of {', '.join(STATUSES)}, not {status!r}")
            if status != "submitted":
                skipped.append(f"{where} is {status}, not submitted")
                continue
            yield where, annotator_name(entry.get("user_id"), f"{where}.user_id"), entry.get("value")

    def _ranking_labels(self, question: str, names: list[str], skipped: list[str]) -> dict:
        labels = {}
        for where, user, value in self._submitted(question, skipped):
            if user in labels:
                raise FieldError(f"{where}.user_id", f"a second response by {user!r} to the same question")
            labels[user] = _ranking(value, names, f"{where}.value")
        return labels

    def _rating_labels(self, rated: dict[str, str], names: list[str], skipped: list[str]) -> dict:
        ratings: dict[str, dict[int, Any]] = {}
        for question, field in rated.items():
            for where, user, value in self._submitted(question, skipped):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise FieldError(f"{where}.value", f"a rating is a number, not {value!r}")
                ratings.setdefault(user, {})[names.index(field)] = -value   # higher rating first
        labels = {}
        for user, given in ratings.items():
            if len(given) < len(names):
                skipped.append(f"{self.where}: {user} rated {len(given)} of {len(names)} responses")
                continue
            labels[user] = groups_by_rank(given, f"{self.where}.responses")
        return labels


def _ranking(value: Any, names: list[str], field: str) -> list[list[int]]:
    if not isinstance(value, list) or not value:
        raise FieldError(field, "a ranking is a list of option values, best first")
    if all(isinstance(v, dict) for v in value):
        ranks = {}
        for j, v in enumerate(value):
            if v.get("value") not in names:
                raise FieldError(f"{field}[{j}].value", f"names no response of the record ({', '.join(names)})")
            ranks[names.index(v["value"])] = v.get("rank")
        groups = groups_by_rank(ranks, field)
    else:
        if any(v not in names for v in value):
            bad = next(v for v in value if v not in names)
            raise FieldError(field, f"{bad!r} names no response of the record ({', '.join(names)})")
        groups = [[names.index(v)] for v in value]
    placed = [i for g in groups for i in g]
    if len(placed) != len(set(placed)) or len(placed) != len(names):
        raise FieldError(field, f"must rank each of the {len(names)} responses once")
    return groups


def _extras_by_user(value: Any, field: str) -> dict[str, dict]:
    """``metadata.prefstudio``: {"labels": {user: {prefstudio label fields}}}, as JSON text or an object."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise FieldError(field, "is not valid JSON") from None
    labels = value.get("labels") if isinstance(value, dict) else None
    if not isinstance(labels, dict):
        raise FieldError(field, 'must be {"labels": {user: {...}}}')
    return {user: read_extras(extras, f"{field}.labels.{user}") for user, extras in labels.items()}


def _flat_to_nested(row: dict, settings: Settings) -> dict:
    """A Hub-layout row (``q.responses``, ``q.responses.users``, ``q.responses.status``) as a record."""
    responses = {}
    for q in settings.questions:
        values = row.get(f"{q}.responses")
        if values is None:
            continue
        users = row.get(f"{q}.responses.users") or []
        statuses = row.get(f"{q}.responses.status") or [None] * len(values)
        if len(users) != len(values) or len(statuses) != len(values):
            raise FieldError(f"{q}.responses.users", "must list one user (and status) per response")
        responses[q] = [{"value": v, "user_id": u, "status": s} for v, u, s in zip(values, users, statuses)]
    return {"fields": {f: row[f] for f in settings.fields or [] if row.get(f) is not None},
            "responses": responses, "metadata": {"prefstudio": row.get("prefstudio")}}


def _record_files(path: Path) -> tuple[Path | None, list[Path]]:
    """(settings.json or None, the files holding the records) of a to_disk or to_hub folder."""
    folder = path if path.is_dir() else path.parent
    settings = folder / ".argilla" / "settings.json"
    settings = settings if settings.is_file() else None
    if path.is_file():
        return settings, [path]
    if (path / "records.json").is_file():
        return settings, [path / "records.json"]
    shards = sorted(p for p in path.rglob("*.parquet") if ".argilla" not in p.parts)
    if not shards:
        raise FormatError(path, "holds neither records.json (rg.Dataset.to_disk) nor Parquet files "
                                "(rg.Dataset.to_hub)", 1, "(file)")
    if settings is None:
        raise FormatError(path, "a Hub-layout dataset needs its .argilla/settings.json", 1, "(file)")
    return settings, shards


def read_dataset(path: Path, prompt_field: str | None = None) -> tuple[list[dict], list[int], list[dict], int]:
    """Rows for the general parser, their lines, the responses skipped (with why), the records read."""
    if not path.exists():
        raise FormatError(path, "no such file or folder", 1, "(file)")
    settings_path, files = _record_files(path)
    settings = Settings.read(settings_path) if settings_path else Settings()
    records, numbers, skipped, index = [], [], [], 0
    for file in files:
        flat = file.suffix == ".parquet"
        items, lines = reading.read_records(file)[:2] if flat else read_json_list(file)
        for item, line in zip(items, lines):
            reasons: list[str] = []
            try:
                rec = _flat_to_nested(item, settings) if flat else item
                rows = Record(rec, f"records[{index}]", settings, prompt_field).rows(reasons)
            except FieldError as err:
                raise err.at(file, line) from None
            index += 1
            records += rows
            numbers += [line] * len(rows)
            skipped += [{"line": line, "reason": r} for r in reasons]
    return records, numbers, skipped, index


# --- export ----------------------------------------------------------------------------------

def _settings(k: int, chat: bool) -> dict:
    field = lambda name, title, required, kind: {  # noqa: E731
        "name": name, "title": title, "required": required,
        "settings": {"type": kind, **({"use_markdown": True} if kind == "text" else {})}}
    return {"guidelines": "Rank the responses to the prompt, best first (equal ranks are ties).",
            "allow_extra_metadata": True, "distribution": {"strategy": "overlap", "min_submitted": 1},
            "fields": [field("prompt", "Prompt", True, "chat" if chat else "text")]
            + [field(f"response_{i}", f"Response {i}", i <= 2, "text") for i in range(1, k + 1)],
            "questions": [{"name": QUESTION, "title": "Rank the responses", "description": None,
                           "required": True,
                           "settings": {"type": "ranking", "options": [
                               {"value": f"response_{i}", "text": f"Response {i}", "description": None}
                               for i in range(1, k + 1)]}}],
            "metadata": [], "vectors": [], "mapping": None}


def _value(row: dict) -> list:
    """A ranking as Argilla's SDK writes it (option values, best first), or with ranks when tied."""
    if all(len(g) == 1 for g in row["ranking"]):
        return [f"response_{g[0] + 1}" for g in row["ranking"]]
    return [{"value": f"response_{i + 1}", "rank": rank}
            for rank, group in enumerate(row["ranking"], 1) for i in group]


def write_dataset(rows: list[dict], out: Path) -> dict:
    """An ``rg.Dataset.to_disk`` folder from ``rankings`` export rows: one record per task, one
    submitted response per label (its annotator as the user)."""
    chat = any(not isinstance(prompt_value(r["prompt"]), str) for r in rows)
    k = max((len(r["responses"]) for r in rows), default=2)
    records = []
    for task_id, labels in by_task(rows).items():
        first = labels[0]
        fields = {"prompt": first["prompt"] if chat else prompt_value(first["prompt"])}
        fields.update({f"response_{i}": r["text"] for i, r in enumerate(first["responses"], 1)})
        extras = {r["annotator"]: export_extras(r) for r in labels if export_extras(r)}
        records.append({"id": task_id, "fields": fields,
                        "metadata": {"prefstudio": json.dumps({"labels": extras})} if extras else {},
                        "suggestions": {}, "vectors": {}, "status": "completed", "_server_id": None,
                        "responses": {QUESTION: [{"value": _value(r), "user_id": r["annotator"],
                                                  "status": "submitted"} for r in labels]}})
    (out / ".argilla").mkdir(parents=True)
    (out / ".argilla" / "settings.json").write_bytes(orjson.dumps(_settings(k, chat), option=orjson.OPT_INDENT_2))
    (out / ".argilla" / "dataset.json").write_bytes(orjson.dumps({"name": out.name, "status": "ready"}))
    (out / "records.json").write_bytes(orjson.dumps(records))
    return {"rows": len(rows), "records": len(records)}
