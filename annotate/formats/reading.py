"""Reading import files: JSONL, CSV and Parquet, plain or gzipped (JSONL and CSV), UTF-8 with or
without a byte-order mark, LF or CRLF line ends.

The limits are enforced while reading, so a hostile file is refused before it is in memory:
no line (JSONL, CSV; its line break included) and no Parquet row over ``MAX_LINE_BYTES``, no
file over ``MAX_FILE_BYTES`` of (decompressed) content, no NUL byte in a text file. They are
read at call time, so a test or a deployment may change them.
"""
from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import FormatError

MAX_LINE_BYTES = 16 * 2**20      # one JSONL/CSV line or Parquet row
MAX_FILE_BYTES = 1 * 2**30       # one file, after decompression
SUFFIXES = ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
            (".parquet", "parquet"))


def size_text(n: int) -> str:
    """2**20 → '1 MiB' (the limits are powers of two)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def file_kind(path: Path) -> tuple[str, bool]:
    """(jsonl | csv | parquet, gzipped?) from the file name."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for suffix, kind in SUFFIXES:
        if name.endswith(suffix) and not (gz and kind == "parquet"):
            return kind, gz
    raise FormatError(path, "unknown file type (use .jsonl, .csv or .parquet; "
                            ".jsonl.gz and .csv.gz are read too)", 1, "(file)")


def file_stem(path: Path) -> str:
    """The file name without its format suffixes (the default source name)."""
    name = path.name
    for suffix in (".gz",) + tuple(s for s, _ in SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "import"


def read_records(path: str | Path) -> tuple[list[Any], list[int], bool]:
    """Rows of a JSONL, CSV or Parquet file: (records, line numbers, cells_are_text).

    CSV cells are strings (an empty cell is a missing value); fields that hold lists or
    objects are JSON text in the cell. For CSV and Parquet the line is the row number plus
    one for the header.
    """
    path = Path(path)
    kind, gz = file_kind(path)
    if not path.is_file():
        raise FormatError(path, "no such file", 1, "(file)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FormatError(path, f"the file is larger than the {size_text(MAX_FILE_BYTES)} "
                                "limit on an import file", 1, "(file)")
    if kind == "parquet":
        return _read_parquet(path)
    lines = None
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            lines = _Lines(path, f)
            return _read_csv(path, lines) if kind == "csv" else _read_jsonl(path, lines)
    except (OSError, EOFError, zlib.error) as err:   # a truncated or corrupt .gz among them
        raise FormatError(path, f"cannot read ({err})", lines.n + 1 if lines else 1, "(file)") from None


class _Lines:
    """(line number, text) of every line, decoded, each checked against the limits as it is
    read; ``n`` is the last line read (so a read error can name the line it hit)."""

    def __init__(self, path: Path, f: BinaryIO):
        self.path, self.f, self.n = path, f, 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        path, total = self.path, 0
        while raw := self.f.readline(MAX_LINE_BYTES + 1):
            self.n += 1
            if len(raw) > MAX_LINE_BYTES:   # (its line break included)
                raise FormatError(path, f"the line is longer than the {size_text(MAX_LINE_BYTES)} "
                                        "limit on one line", self.n, "(row)")
            total += len(raw)
            if total > MAX_FILE_BYTES:
                raise FormatError(path, f"the file holds more than the {size_text(MAX_FILE_BYTES)} "
                                        "limit on an import file", self.n, "(file)")
            # text has no NUL byte and decodes as UTF-8; the first byte that breaks either is named
            nul = raw.find(b"\0")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if nul < 0 or err.start < nul:
                    raise FormatError(path, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                                            f"{total - len(raw) + err.start})", self.n, "(row)") from None
            if nul >= 0:
                raise FormatError(path, f"a NUL byte at offset {total - len(raw) + nul}: binary data, "
                                        "not text", self.n, "(row)")
            yield self.n, text[1:] if self.n == 1 and text.startswith("\ufeff") else text


def _read_jsonl(path: Path, lines: _Lines) -> tuple[list, list[int], bool]:
    records, numbers = [], []
    for n, text in lines:
        if not text.strip():
            continue
        try:
            records.append(orjson.loads(text))
        except orjson.JSONDecodeError as err:
            raise FormatError(path, f"not valid JSON ({err.msg} at column {err.colno})", n) from None
        numbers.append(n)
    return records, numbers, False


def _read_csv(path: Path, lines: _Lines) -> tuple[list[dict], list[int], bool]:
    csv.field_size_limit(MAX_LINE_BYTES)
    # strict: a quote left open at the end of a truncated file is an error, not a short cell
    reader = csv.reader((text for _, text in lines), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return [], [], True
        if len(set(header)) != len(header) or not all(h.strip() for h in header):
            raise FormatError(path, "column names must be unique and non-empty", 1, "(header)")
        records, numbers = [], []
        for i, cells in enumerate(reader):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise FormatError(path, f"{len(cells)} cells, but the header names "
                                        f"{len(header)} columns", i + 2)
            records.append({h: (c if c != "" else None) for h, c in zip(header, cells)})
            numbers.append(i + 2)
    except csv.Error as err:
        raise FormatError(path, f"malformed CSV ({err})", reader.line_num) from None
    return records, numbers, True


def _read_parquet(path: Path) -> tuple[list[dict], list[int], bool]:
    """Rows of a Parquet file, a batch at a time, each row checked against ``MAX_LINE_BYTES``."""
    rows: list[dict] = []
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            if batch.nbytes > MAX_LINE_BYTES:   # rarely: then find the row at fault
                for i in range(batch.num_rows):
                    if batch.slice(i, 1).nbytes > MAX_LINE_BYTES:
                        raise FormatError(path, f"the row is larger than the "
                                                f"{size_text(MAX_LINE_BYTES)} limit on one row",
                                          len(rows) + i + 2)
            rows += batch.to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise FormatError(path, f"not a readable Parquet file ({err})", len(rows) + 2 if rows else 1,
                          "(file)") from None
    return rows, list(range(2, len(rows) + 2)), False
