"""Field readers: one function per kind of field of an import row, each returning the value
as the store wants it or raising ``FieldError`` naming the field. The general parser
(``parsing``) and the fast path (``fast``) both call them, so a field means the same either way.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .errors import FieldError

MAX_K = 9              # responses in one ranking task
MAX_RESPONSES = 256    # responses in one row (candidates beyond a task's K, e.g. best-of-n)
MAX_ROUND = 2**31 - 1  # the store keeps rounds as 32-bit integers
MAX_NESTING = 32       # levels of lists/objects in a free-form field (gen_params)
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}
LABEL_SOURCES = {"human": "human", "ai": "ai", "ai+human": "human"}  # pairs export's `source`


# Fields each format reads; anything else is reported as ignored. The export's provenance
# columns are read back without complaint (they are recomputed, not imported).
LABEL_FIELDS = {"margin", "margin_level", "soft_prob", "source", "annotator", "judge",
                "rationale", "principle", "round"}
PROVENANCE = {"votes_chosen", "votes_rejected", "n_labels", "agreement", "task_id", "label_id",
              "kind", "id", "created_at"}
FIELDS = {
    "hh": {"chosen", "rejected"} | LABEL_FIELDS,
    "pairs": {"prompt", "chosen", "rejected"} | LABEL_FIELDS,
    "rankings": {"prompt", "task_id", "responses", "ranking", "kind", "held_out"} | LABEL_FIELDS,
    "prompts": {"prompt", "source", "tags", "held_out"},
    "responses": {"prompt", "prompt_id", "response", "responses", "model", "adapter",
                  "gen_params", "task", "round"},
}


class ParseContext:
    """What every row parser needs: how cells are encoded, names and defaults for new rows."""

    def __init__(self, text_cells: bool, source: str, round: int, required_labels: int,
                 levels: dict[str, float], tasks: dict[str, dict]):
        self.text_cells, self.source, self.round = text_cells, source, round
        self.required_labels, self.levels, self.tasks = required_labels, levels, tasks
        self.nearest: dict[float, str] = {}


def parse_json_text(text: str, field: str) -> Any:
    """JSON in a text cell. Raw control characters are allowed (a spreadsheet cell may hold
    newlines); nesting too deep for Python's parser is an error like any other bad JSON."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as err:
        raise FieldError(field, f"not valid JSON ({err})") from None
    except RecursionError:
        raise FieldError(field, "not valid JSON (nested too deeply)") from None


def json_cell(value: Any, field: str, ctx: ParseContext) -> Any:
    """CSV cells hold lists and objects as JSON text."""
    if ctx.text_cells and isinstance(value, str):
        return parse_json_text(value, field)
    return value


def _messages_in_cell(value: Any, field: str, ctx: ParseContext) -> Any:
    """A CSV cell that holds a JSON list of messages, parsed; any other value as it is (a
    prompt or completion that merely starts with "[" is text)."""
    if ctx.text_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = parse_json_text(value, field)
        except FieldError:
            return value
        if looks_like_messages(parsed):
            return parsed
    return value


def looks_like_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m
                                                           for m in value)


def read_messages(value: Any, field: str, ctx: ParseContext) -> str | list:
    """A prompt as given: text (one user turn) or a list of {role, content} messages.
    ``store.check_messages`` (through ``prompt_row``) normalises and checks it."""
    if value is None:
        raise FieldError(field, "missing")
    value = _messages_in_cell(value, field, ctx)
    if not isinstance(value, (str, list)):
        raise FieldError(field, f"must be text or a list of messages, not {type(value).__name__}")
    return value


def read_completion(value: Any, field: str, ctx: ParseContext) -> str:
    """A TRL completion: text, or a list holding one assistant message."""
    value = _messages_in_cell(value, field, ctx)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise FieldError(field, "a conversational completion is a list of exactly one assistant message")
        content = value[0].get("content")
        if not isinstance(content, str):
            raise FieldError(field, "the assistant message's content must be text")
        return content.strip()
    raise FieldError(field, "missing" if value is None else
                     f"must be text or a list of messages, not {type(value).__name__}")


def opt_text(rec: dict, field: str) -> str | None:
    value = rec.get(field)
    if value is not None and not isinstance(value, str):
        raise FieldError(field, f"must be text, not {type(value).__name__}")
    return value or None


def read_number(value: Any, field: str, ctx: ParseContext) -> float:
    if ctx.text_cells and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise FieldError(field, f"must be a number, not {value!r}") from None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise OverflowError
        return float(value)
    except OverflowError:   # (an integer too large for a float among them)
        raise FieldError(field, f"must be a finite number, not {value!r}") from None


def read_int(value: Any, field: str, ctx: ParseContext, default: int, maximum: int = MAX_ROUND) -> int:
    if value is None:
        return default
    number = read_number(value, field, ctx)
    if number != int(number) or not 0 <= number <= maximum:
        raise FieldError(field, f"must be an integer from 0 to {maximum}, not {value!r}")
    return int(number)


def read_margin(rec: dict, ctx: ParseContext) -> str | None:
    """A margin level: a level name (``better``), or a number mapped to the nearest level."""
    if "margin_level" in rec:
        level = rec["margin_level"]
        if level is not None and level not in ctx.levels:
            raise FieldError("margin_level", f"must be one of {', '.join(ctx.levels)}, not {level!r}")
        return level
    value = rec.get("margin")
    if value is None:
        return None
    if isinstance(value, str) and value in ctx.levels:
        return value
    if isinstance(value, str) and not ctx.text_cells:
        raise FieldError("margin", f"must be a number or one of {', '.join(ctx.levels)}, not {value!r}")
    number = read_number(value, "margin", ctx)
    if number < 0:
        raise FieldError("margin", f"must be >= 0 (the chosen response is the better one), not {number}")
    level = ctx.nearest.get(number)
    if level is None:  # nearest level; half-way between two takes the stronger one
        level = ctx.nearest[number] = min(
            ctx.levels, key=lambda lv: (abs(ctx.levels[lv] - number), -ctx.levels[lv]))
    return level


def read_label_source(rec: dict) -> str:
    value = rec.get("source") or "human"
    if value not in LABEL_SOURCES:
        raise FieldError("source", f"must be human or ai, not {value!r}")
    return LABEL_SOURCES[value]


def read_gen_params(value: Any, field: str) -> dict | None:
    """Generation parameters: a free-form object (JSON text in CSV and Parquet cells)."""
    if isinstance(value, str):
        value = parse_json_text(value, field)
    if value is not None and not isinstance(value, dict):
        raise FieldError(field, f"must be an object, not {type(value).__name__}")
    if value is not None and _nesting(value) > MAX_NESTING:
        raise FieldError(field, f"nests lists and objects more than {MAX_NESTING} levels deep")
    return value


def _nesting(value: Any) -> int:
    """Levels of lists and objects in ``value`` (without recursion: the value may be deep)."""
    deepest, level = 0, [value]
    while level:
        deepest += 1
        if deepest > MAX_NESTING:
            break
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x)
                 if isinstance(v, (dict, list))]
    return deepest


def read_items(value: Any, field: str, ctx: ParseContext, defaults: dict) -> list[dict]:
    """Responses: a list of texts or {text, model?, adapter?, gen_params?} objects."""
    value = json_cell(value, field, ctx)
    if not isinstance(value, list):
        raise FieldError(field, "missing" if value is None else f"must be a list, not {type(value).__name__}")
    if len(value) > MAX_RESPONSES:
        raise FieldError(field, f"holds {len(value)} responses; a row holds at most {MAX_RESPONSES}")
    items, seen = [], {}
    for j, item in enumerate(value):
        where = f"{field}[{j}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise FieldError(where, f"must be text or an object with 'text', not {type(item).__name__}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise FieldError(where, "text must be a non-empty string")
        if text in seen:
            raise FieldError(where, f"repeats {field}[{seen[text]}] (a response may appear once)")
        seen[text] = j
        out = {"text": text}
        for key in ("model", "adapter"):   # an item's own value, else the line's
            v = item.get(key) if item.get(key) is not None else defaults.get(key)
            if v is not None and not isinstance(v, str):
                raise FieldError(f"{where}.{key}", f"must be text, not {type(v).__name__}")
            out[key] = v
        gen_params = item.get("gen_params")
        out["gen_params"] = read_gen_params(gen_params if gen_params is not None
                                            else defaults.get("gen_params"), f"{where}.gen_params")
        items.append(out)
    return items


def read_ranking(value: Any, k: int, ctx: ParseContext) -> list[list[int]]:
    """Tie groups of 0-based indices, best first, naming each of the k responses once."""
    value = json_cell(value, "ranking", ctx)
    if value is None:
        raise FieldError("ranking", "missing")
    if not isinstance(value, list):
        raise FieldError("ranking", f"must be a list of tie groups, not {type(value).__name__}")
    if not value:
        raise FieldError("ranking", "is empty")
    groups, seen = [], set()
    for g, group in enumerate(value):
        group = [group] if isinstance(group, int) and not isinstance(group, bool) else group
        if not isinstance(group, list) or not group:
            raise FieldError(f"ranking[{g}]", "must be a non-empty list of response indices")
        for i in group:
            if isinstance(i, bool) or not isinstance(i, int):
                raise FieldError(f"ranking[{g}]", f"holds {i!r}, not a response index")
            if not 0 <= i < k:
                raise FieldError(f"ranking[{g}]", f"index {i} is out of range for {k} responses")
            if i in seen:
                raise FieldError(f"ranking[{g}]", f"response {i} appears twice")
            seen.add(i)
        groups.append(list(group))
    if len(seen) != k:
        missing = min(set(range(k)) - seen)
        raise FieldError("ranking", f"leaves out response {missing}")
    return groups


# --- splitting transcripts ---------------------------------------------------------------------

def _transcript_messages(text: str) -> list[dict]:
    """'\\n\\nHuman: …\\n\\nAssistant: …\\n\\nHuman: …' → chat messages."""
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip()
    parts = _TURN.split(text)
    if parts[0].strip():
        raise FieldError("chosen", "a transcript starts with '\\n\\nHuman:'")
    return [{"role": _HH_ROLE[role], "content": content.strip()}
            for role, content in zip(parts[1::2], parts[2::2])]


def split_transcripts(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """HH-RLHF: two transcripts share everything up to the last assistant turn.

    The prompt ends at the last ``\\n\\nAssistant:`` inside their common prefix (so a response
    that itself contains 'Human:' does not move the cut); the rest of each is the response.
    """
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(ASSISTANT, 0, shared)
    if cut < 0:
        raise FieldError("chosen", "chosen and rejected share no '\\n\\nAssistant:' turn")
    start = cut + len(ASSISTANT)
    return _transcript_messages(chosen[:cut]), chosen[start:].strip(), rejected[start:].strip()


def split_conversations(chosen: Any, rejected: Any) -> tuple[list[dict], str, str]:
    """TRL's implicit-prompt conversational pairs: two chats that differ in the last message."""
    for field, chat in (("chosen", chosen), ("rejected", rejected)):
        if not looks_like_messages(chat):
            raise FieldError(field, "must be a list of messages")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if len(chosen) == len(rejected) == shared:
        return chosen[:-1], "", ""  # identical: the caller skips the row
    for field, chat in (("chosen", chosen), ("rejected", rejected)):
        if len(chat) - shared != 1 or chat[-1].get("role") != "assistant":
            raise FieldError(field, "the two chats must differ only in their last (assistant) message")
        if not isinstance(chat[-1].get("content"), (str, type(None))):
            raise FieldError(field, "the last message's content must be text")
    return (chosen[:shared], (chosen[-1].get("content") or "").strip(),
            (rejected[-1].get("content") or "").strip())

