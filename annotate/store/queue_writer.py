"""The queue's writer: one thread that commits every write waiting in the index at that moment
in one transaction (group commit) and answers each caller only after COMMIT, so a label
acknowledged is on disk. Claims are written lazily, with the next batch or within
``CLAIM_FLUSH_S``.
"""
from __future__ import annotations

import threading
import time

from .items import insert_rows
from .labels import mark_superseded
from .queue_index import Pending, QueueIndex

CLAIM_FLUSH_S = 1.0   # claims are written to their table at most this often (and at close)


class QueueWriter:
    """The writer thread of one ``QueueIndex`` (it shares the index's lock and ``pending``)."""

    def __init__(self, index: QueueIndex):
        self.index = index
        self.thread = threading.Thread(target=self._write_loop, name="prefstudio-queue-writer",
                                       daemon=True)
        self.thread.start()

    def _write_loop(self) -> None:
        ix = self.index
        while True:
            with ix.lock:
                while not ix.pending and not ix.closing:
                    if not ix.claims_dirty:
                        ix.wake.wait()
                        continue
                    wait = ix.claims_written + CLAIM_FLUSH_S - time.monotonic()
                    if wait <= 0:
                        break               # claims waited long enough: write them
                    ix.wake.wait(wait)
                if ix.closing and not ix.pending and not ix.claims_dirty:
                    return
            self._flush()

    def _flush(self) -> None:
        """Commit every waiting write in one transaction, then answer their callers."""
        ix = self.index
        db = ix.db
        with db.write_lock:
            with ix.lock:
                ops = list(ix.pending)
                dirty = []
                if ix.closing or time.monotonic() - ix.claims_written >= CLAIM_FLUSH_S:
                    dirty = sorted(ix.claims_dirty)
                    ix.claims_dirty.clear()
                    ix.claims_written = time.monotonic()
                claims = [{"task_id": ix.claims_by[u].task_id, "annotator": u,
                           "claimed_at": ix.claims_by[u].since}
                          for u in dirty if u in ix.claims_by]
            ours = ix.synced == db.queue_commits   # nobody else wrote since our last look
            failed: dict[int, BaseException] = {}
            try:
                with db.write() as cur:
                    self._write(cur, ops, dirty, claims)
            except Exception:                   # find the write at fault; commit the others
                for i, op in enumerate(ops):
                    try:
                        with db.write() as cur:
                            self._write(cur, [op], [], [])
                    except Exception as err:    # noqa: BLE001 (handed to its caller)
                        failed[i] = err
                ours = False                    # reload: the index counted the failed ones
            with ix.lock:
                for _ in ops:
                    ix.pending.popleft()
                ix.synced = db.queue_commits if ours else -1
        for i, op in enumerate(ops):
            if i in failed:
                op.done.set_exception(failed[i])
            else:
                op.done.set_result(op.reply)

    @staticmethod
    def _write(cur, ops: list[Pending], dirty: list[str], claims: list[dict]) -> None:
        labels = [op.row for op in ops if op.kind == "label"]
        if labels:   # (fresh: random ids, never stored; a clash would raise, not skip)
            insert_rows(cur, "labels", labels, fresh=True)
        # an edit points the old label at the new one; an undo (a retract) at a retraction marker
        mark_superseded(cur, [(op.supersedes, op.row["id"] if op.kind == "label" else None)
                              for op in ops if op.kind in ("label", "retract") and op.supersedes])
        for op in ops:
            if op.kind == "label" and op.clear_skip:
                cur.execute("DELETE FROM skips WHERE task_id = ? AND annotator = ?",
                            [op.task_id, op.annotator])
            if op.kind == "skip":
                cur.execute("INSERT INTO skips (task_id, annotator, skipped_at) VALUES (?, ?, ?) "
                            "ON CONFLICT DO UPDATE SET skipped_at = excluded.skipped_at",
                            [op.task_id, op.annotator, op.skipped_at])
        if dirty:
            cur.execute("DELETE FROM claims WHERE list_contains(?, annotator)", [dirty])
            insert_rows(cur, "claims", claims)

    def close(self) -> None:
        """Write what is waiting and stop the writer (the store is closing)."""
        ix = self.index
        with ix.lock:
            ix.closing = True
            ix.wake.notify()
        self.thread.join()
