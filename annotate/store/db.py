"""The connection: one DuckDB file, one owning process, a cursor per thread, one lock for writes.

DuckDB lets exactly one process open a file for writing. The process that opens a ``Store``
owns the file until it closes it: the server while it runs, otherwise the CLI command. Other
processes get ``StoreBusy`` with the owner named, never a half-written file.

Inside the owning process every thread gets its own cursor (DuckDB connections are not safe
to share between threads; cursors are). Writes are serialised by one lock and each runs in a
single transaction, so a failed import or label leaves the database exactly as it was.

Because no other process can write the file, state derived from it may be kept in memory
(``Store.memo``: the queue's index, the user roles), as long as it notices writes made by
other code: ``Store.commits`` counts the transactions committed through this ``Store``, and
``Store.queue_commits`` those that may have changed what the queue reads (every one, unless
the transaction called ``queue_untouched()``).
"""
from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import orjson

from .schema import LATEST, MIGRATIONS


class StoreError(ValueError):
    """Bad input to the store (unknown id, invalid ranking, duplicate label...). Nothing changed."""


class StoreBusy(RuntimeError):
    """Another process has the database file open for writing."""


def one(cur: duckdb.DuckDBPyConnection, sql: str, params: list | tuple | None = None) -> tuple | None:
    """The first row of a query, or None. (DuckDB 2 wants every result read to the end before
    the cursor runs the next statement, so this reads them all.)"""
    rows = cur.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys, non-ASCII kept: the text content ids are computed from.

    orjson writes strings exactly as ``json.dumps(ensure_ascii=False, sort_keys=True,
    separators=(",", ":"))`` does (tests/test_store_ids.py checks every code point) and is
    several times faster, which the 50k rows/s import needs; what orjson refuses (integers
    beyond 64 bits, non-string keys, lone surrogates) goes through ``json``.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_id(*parts: str) -> str:
    """A 16-hex-digit id derived from content, so importing the same row twice adds nothing.

    sha256 of the parts, each followed by the unit separator 0x1f.
    """
    return hashlib.sha256(("\x1f".join(parts) + "\x1f").encode("utf-8")).hexdigest()[:16]


class Store:
    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as err:
            if "lock" in str(err).lower():
                raise StoreBusy(
                    f"{self.path} is open in another process ({_lock_holder(err)}); "
                    "stop it (e.g. the prefstudio server) or work through its web UI") from None
            raise
        self._local = threading.local()
        self.write_lock = threading.RLock()   # held by every write(); the queue holds it to read still tables
        self.commits = 0         # transactions committed so far
        self.queue_commits = 0   # ... of which may have changed tasks, labels, claims or skips
        self.memo: dict[str, Any] = {}   # in-memory state other store modules keep per Store
        self._on_close: list = []        # called before the connection closes (flush, stop threads)
        self._closed = False
        try:
            self._migrate()
        except BaseException:
            self._con.close()   # a refused database must not stay open (and locked) in this process
            raise

    # -- connection plumbing -------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:   # a request that outlived the shutdown gets a clear refusal, not a 500
            raise StoreError(f"{self.path.name} is closed: prefstudio is shutting down; "
                             "nothing was saved: try again")
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._con.cursor()
        return cur

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the write lock; rolled back entirely if anything raises.

        A ``write()`` inside another on the same thread joins the outer transaction (so a
        store function may call another), and only the outermost commits or rolls back.
        """
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        with self.write_lock:
            cur = self.cursor()
            depth = getattr(self._local, "write_depth", 0)
            if depth:
                self._local.write_depth = depth + 1
                try:
                    yield cur
                finally:
                    self._local.write_depth = depth
                return
            cur.execute("BEGIN TRANSACTION")
            self._local.write_depth = 1
            self._local.queue_untouched = False
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
                self.commits += 1
                self.queue_commits += not self._local.queue_untouched
            finally:
                self._local.write_depth = 0

    def queue_untouched(self) -> None:
        """Declare that the current write transaction changes no task, label, claim or skip,
        so the queue's in-memory index need not reload after it (runs, metrics, users...)."""
        self._local.queue_untouched = True

    def query(self, sql: str, params: list | tuple | dict | None = None) -> list[dict]:
        cur = self.cursor().execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: list | tuple | None = None) -> Any:
        row = one(self.cursor(), sql, params)
        return None if row is None else row[0]

    def df(self, sql: str, params: list | tuple | None = None):
        return self.cursor().execute(sql, params or []).df()

    def on_close(self, fn) -> None:
        """Run ``fn()`` when the store closes, before the connection does (e.g. a final flush)."""
        self._on_close.append(fn)

    def close(self) -> None:
        """Flush, checkpoint, close: afterwards the ``.duckdb`` file alone holds everything.

        The ``on_close`` callbacks run first (the queue's writer commits every label it has
        acknowledged or still holds), then, under the write lock so no transaction is cut in
        half, a CHECKPOINT folds the write-ahead log into the file and the connection (with
        every thread's cursor) closes, which removes the ``.wal``. A backup that copies only
        the ``.duckdb`` file of a closed store loses nothing (RELIABILITY.md). Closing twice
        is harmless.
        """
        while self._on_close:
            self._on_close.pop()()
        with self.write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.read_only:
                    # FORCE: a reader that left a result unread must not keep the log open
                    self._con.execute("FORCE CHECKPOINT")
            finally:
                self._con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.scalar("SELECT max(version) FROM schema_version") or 0

    def _migrate(self) -> None:
        cur = self.cursor()
        has_version_table = one(
            cur, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        )[0]
        if not has_version_table:
            if self.read_only:
                raise StoreError(f"{self.path} is not a prefstudio database")
            cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
        current = self.version
        if current > LATEST:
            raise StoreError(f"{self.path} has schema version {current}; this prefstudio knows "
                             f"up to {LATEST}: upgrade prefstudio")
        if current < LATEST and self.read_only:
            raise StoreError(f"{self.path} needs a schema upgrade: open it once read-write")
        for version in range(current + 1, LATEST + 1):
            with self.write() as w:
                w.execute(MIGRATIONS[version - 1])
                w.execute("INSERT INTO schema_version (version) VALUES (?)", [version])


def _lock_holder(err: Exception) -> str:
    text = str(err)
    marker = "(PID "
    if marker in text:
        return "PID " + text.split(marker, 1)[1].split(")", 1)[0]
    return "lock held"
