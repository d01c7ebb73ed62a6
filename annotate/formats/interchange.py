"""What the Label Studio and Argilla formats share: their files become rows of the ``rankings``
import format (``{"prompt", "responses", "ranking", "annotator", ...}``) or, for an item nobody
labelled, of the ``responses`` format, which the general parser then checks and stores like any
other file. Exports go the other way from the ``rankings`` export's rows.

prefstudio's own label fields that the tools have no place for (source, judge, margin level,
soft probability, rationale, principle, round) travel in a ``prefstudio`` object beside each
label, so an export imported again gives the same labels.
"""
from __future__ import annotations

from typing import Any, Iterable

from .errors import FieldError
from .fields import MAX_K

EXTRAS = ("source", "judge", "principle", "margin_level", "soft_prob", "rationale", "round", "kind")


def export_extras(row: dict) -> dict:
    """The fields of a ``rankings`` export row that the tool's own label cannot hold."""
    extras = {k: row[k] for k in EXTRAS if row.get(k) is not None}
    defaults = {"source": "human", "round": 0,
                "kind": "pairwise" if len(row["responses"]) == 2 else "ranking"}
    return {k: v for k, v in extras.items() if defaults.get(k) != v}


def read_extras(value: Any, field: str) -> dict:
    """A ``prefstudio`` object read back: only the known fields (the parser checks their values)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(field, f"must be an object, not {type(value).__name__}")
    unknown = sorted(set(value) - set(EXTRAS))
    if unknown:
        raise FieldError(f"{field}.{unknown[0]}", f"is not a prefstudio label field (use {', '.join(EXTRAS)})")
    return dict(value)


def annotator_name(value: Any, field: str) -> str:
    """A user as the tools name one: a number (``ls-user-7``), a name, or an object with an
    email, username or id."""
    if isinstance(value, dict):
        value = next((value[k] for k in ("email", "username", "id") if value.get(k) not in (None, "")), None)
    if isinstance(value, bool) or value is None:
        raise FieldError(field, "missing: every label needs its annotator")
    if isinstance(value, int):
        return f"ls-user-{value}"
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, f"must be a user id or name, not {value!r}")
    return value.strip()


def check_texts(texts: list[Any], fields: list[str]) -> list[str]:
    """Responses of one item: 2 to MAX_K non-empty, distinct texts."""
    if not 2 <= len(texts) <= MAX_K:
        raise FieldError(fields[0] if fields else "(row)",
                         f"a ranking compares 2 to {MAX_K} responses, not {len(texts)}")
    seen: dict[str, str] = {}
    for text, field in zip(texts, fields):
        if not isinstance(text, str) or not text.strip():
            raise FieldError(field, "must be a non-empty text (a response)")
        if text in seen:
            raise FieldError(field, f"repeats {seen[text]} (a response may appear once)")
        seen[text] = field
    return texts


def groups_by_rank(ranks: dict[int, Any], field: str) -> list[list[int]]:
    """{response index: rank} → tie groups, rank 1 (the lowest number) first."""
    for rank in ranks.values():
        if isinstance(rank, bool) or not isinstance(rank, (int, float)):
            raise FieldError(field, f"a rank must be a number, not {rank!r}")
    order = sorted(set(ranks.values()))
    return [[i for i, r in ranks.items() if r == rank] for rank in order]


def label_record(prompt: Any, texts: list[str], groups: list[list[int]], annotator: str,
                 extras: dict) -> dict:
    return {**extras, "prompt": prompt, "responses": texts, "ranking": groups, "annotator": annotator}


def unlabelled_record(prompt: Any, texts: list[str]) -> dict:
    """An item nobody labelled still becomes a task (the ``responses`` format)."""
    return {"prompt": prompt, "responses": texts}


def by_task(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """``rankings`` export rows grouped by task, in export order."""
    tasks: dict[str, list[dict]] = {}
    for row in rows:
        tasks.setdefault(row["task_id"], []).append(row)
    return tasks


def prompt_value(messages: list[dict]) -> str | list[dict]:
    """A one-turn prompt as its text, a dialogue as its messages (both import again)."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def is_strict_pair(row: dict) -> bool:
    return len(row["responses"]) == 2 and len(row["ranking"]) == 2
