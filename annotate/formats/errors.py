"""The two errors of an import: ``FormatError`` (what the caller sees) and ``FieldError`` (one
bad field of the row being parsed, turned into a FormatError once the file and line are known)."""
from __future__ import annotations

from pathlib import Path

from ..store import StoreError

MAX_REASON = 300   # characters of a reason: a 10 MB bad value must not become a 10 MB message


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` fit for a one-line message: line breaks escaped, at most ``limit`` characters."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 1] + "…"


class FormatError(StoreError):
    """A file that cannot be imported; the message is one line, ``FILE:LINE: FIELD: reason``.

    ``field`` is a field of the row, ``(row)`` for the row as a whole, ``(header)`` for a CSV
    header and ``(file)`` for the file as a whole (line 1 then). Errors about the call rather
    than the file (an unknown --format) carry no line and name only the file. Called with a
    message alone (``FormatError(text)``, as a caller rewording one does) it keeps that text.
    """

    def __init__(self, path: str | Path, reason: str | None = None, line: int | None = None,
                 field: str | None = None):
        if reason is None:
            self.path = self.line = self.field = None
            self.reason = one_line(str(path), limit=10 * MAX_REASON)
            super().__init__(self.reason)
            return
        self.path, self.line, self.field = str(path), line, field
        self.reason = one_line(str(reason))
        where = self.path if line is None else f"{self.path}:{line}: {field or '(row)'}"
        super().__init__(f"{where}: {self.reason}")


class FieldError(Exception):
    """A bad field in the row being parsed; the caller adds the file and line."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason

    def at(self, path: str | Path, line: int) -> FormatError:
        return FormatError(path, self.reason, line, self.field)
