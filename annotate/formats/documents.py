"""Reading one JSON document that holds a list of records (Label Studio's JSON export, Argilla's
``records.json``), each element with the line it starts on, under the same limits as JSONL:
no file over ``MAX_FILE_BYTES``, no element over ``MAX_LINE_BYTES``, UTF-8 text, no NUL byte.

A file whose first character is not ``[`` is read as JSON Lines (one record per line), so an
export turned into JSONL by a script imports too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import reading
from .errors import FormatError


def _line_of(text: str, offset: int, cache: list[int]) -> int:
    """1-based line of ``offset``; ``cache`` = [offset, line] of the last call (offsets grow)."""
    cache[1] += text.count("\n", cache[0], offset)
    cache[0] = offset
    return cache[1]


def read_json_list(path: str | Path) -> tuple[list[Any], list[int]]:
    """(elements, the line each starts on) of a JSON array file, or of a JSON Lines file."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "no such file" if not path.exists() else "not a file", 1, "(file)")
    if path.stat().st_size > reading.MAX_FILE_BYTES:
        raise FormatError(path, f"the file is larger than the {reading.size_text(reading.MAX_FILE_BYTES)} "
                                "limit on an import file", 1, "(file)")
    raw = path.read_bytes()
    head = raw[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        return _read_lines(path)
    text = _decode(path, raw)
    decoder = json.JSONDecoder(strict=False)
    items, lines, cache = [], [], [0, 1]
    i = text.index("[") + 1
    while True:
        i = _skip_space(text, i)
        if i < len(text) and text[i] == "]" and not items:
            return items, lines
        line = _line_of(text, i, cache)
        try:
            item, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as err:
            raise FormatError(path, f"not valid JSON ({err.msg})", _line_of(text, err.pos, cache)) from None
        except RecursionError:
            raise FormatError(path, "not valid JSON (nested too deeply)", line) from None
        if end - i > reading.MAX_LINE_BYTES:
            raise FormatError(path, f"the record is longer than the "
                                    f"{reading.size_text(reading.MAX_LINE_BYTES)} limit on one record", line)
        items.append(item)
        lines.append(line)
        i = _skip_space(text, end)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "]" and not text[i + 1:].strip():
            return items, lines
        where = "the file ends inside the list" if i >= len(text) else f"expected ',' or ']', found {text[i]!r}"
        raise FormatError(path, f"not valid JSON ({where})", _line_of(text, min(i, len(text)), cache))


def _read_lines(path: Path) -> tuple[list, list[int]]:
    """JSON Lines, whatever the file's suffix, through the JSONL reader (its limits and messages)."""
    with open(path, "rb") as f:
        records, lines, _ = reading._read_jsonl(path, reading._Lines(path, f))
    return records, lines


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _decode(path: Path, raw: bytes) -> str:
    nul = raw.find(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if nul < 0 or err.start < nul:
            raise FormatError(path, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
                              raw.count(b"\n", 0, err.start) + 1, "(row)") from None
    if nul >= 0:
        raise FormatError(path, f"a NUL byte at offset {nul}: binary data, not text",
                          raw.count(b"\n", 0, nul) + 1, "(row)")
    return text.lstrip("\ufeff")
