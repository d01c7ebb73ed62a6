"""The annotation queue: which task an annotator labels next, claims, skips, submitting.

A task needs labels while its current human labels plus the live claims of *other*
annotators are fewer than its ``required_labels`` (the overlap the admin sets). A claim lives
``LEASE_S`` seconds; an annotator who walks away frees the slot for someone else after that.

Order of service, for one annotator:
    1. the task they already hold (a reload shows the same task),
    2. tasks with the fewest labels + claims (work spreads evenly over tasks), in an order
       that starts at a different place for each annotator (so they do not all queue for the
       same task),
    3. tasks they skipped, oldest skip first ("skip, and come back later").

Responses are shown in an order shuffled per (annotator, task) but stable across reloads;
``submit_label`` recomputes that order server-side and stores it as ``shown_order``, so
position bias can be measured without trusting the client.

How it is fast. Only one process can write the database (``db.py``), so the queue's state
lives in memory in that process: ``QueueIndex`` (``queue_index.py``), loaded from the tables
when the studio starts (``load_in_background``; otherwise on first use) and updated by every
queue action under one lock. ``next_task`` is a Python
operation with no SQL, and since the check and the claim happen under that lock, the last
open slot never goes to two annotators. ``submit_label`` validates in Python, records the
label in the index and hands the row to one writer thread (``queue_writer.py``), which
commits every label waiting at that moment in one transaction (group commit) and answers
each caller only after COMMIT: a label acknowledged is on disk. Claims are kept in memory and written to the ``claims`` table lazily (with the
next batch, or within ``CLAIM_FLUSH_S``), so a lease usually survives a restart but need not.
Any other write to the database (an import, an undo through ``labels.retract_label``, a
changed overlap) is noticed through ``Store.queue_commits`` and the index is reloaded from
the tables, with the labels still waiting for the writer applied on top; writes that touch
none of the queue's tables (runs, metrics, users) say so and cost no reload.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
from collections import Counter
from concurrent.futures import Future
from typing import Any, Sequence

from .db import Store, StoreError
from .labels import label_row, retract_label
from .queue_index import Pending, QueueIndex
from .queue_writer import QueueWriter

LEASE_S = 30 * 60
MAX_RATIONALE = 4000


def shown_order(task_id: str, annotator: str, response_ids: Sequence[str]) -> list[str]:
    """The order this annotator sees the task's responses in: random, but the same every time."""
    seed = hashlib.sha256(f"{annotator}\x1f{task_id}".encode()).digest()
    order = list(response_ids)
    random.Random(seed).shuffle(order)
    return order


# -- the public functions (the CLI, the studio and the tests call these) ---------------------

def next_task(db: Store, annotator: str, lease_s: int = LEASE_S) -> str | None:
    """Claim and return the id of the next task for ``annotator``, or None when none is left.

    Taking a new task releases the annotator's previous claim (one live claim each); a task
    already held keeps its claim time, so the duration covers a page reload.
    """
    return queue(db).next_task(annotator, lease_s)


def skip_task(db: Store, annotator: str, task_id: str) -> None:
    """Give the task back; it returns to this annotator only after every unskipped task."""
    queue(db).skip(annotator, task_id).result()


def submit_label(db: Store, annotator: str, task_id: str, ranking: Any, *,
                 margin_level: str | None = None, rationale: str | None = None,
                 duration_ms: int | None = None, levels: dict[str, float] | None = None) -> dict:
    """Label a task handed to ``annotator``; a second submit for the same task is an edit.

    Allowed when the annotator holds a claim on the task (from ``next_task``) or has labelled
    it before (edit, or a redo after undo). The previous current label, if any, is superseded
    (never deleted). ``duration_ms`` defaults to the time since the claim was made.
    Returns ``{"label_id", "task_id", "superseded"}`` once the label is committed.
    """
    return submit_label_later(db, annotator, task_id, ranking, margin_level=margin_level,
                              rationale=rationale, duration_ms=duration_ms, levels=levels).result()


def submit_label_later(db: Store, annotator: str, task_id: str, ranking: Any, *,
                       margin_level: str | None = None, rationale: str | None = None,
                       duration_ms: int | None = None,
                       levels: dict[str, float] | None = None) -> Future:
    """``submit_label`` for callers that wait their own way (an async handler): a refused
    label raises here; the future resolves to the same dict once the label is committed."""
    return queue(db).submit(annotator, task_id, ranking, margin_level=margin_level,
                            rationale=rationale, duration_ms=duration_ms, levels=levels)


def undo_label(db: Store, annotator: str, label_id: str) -> str:
    """Withdraw one of the annotator's current labels (the row stays, marked as retracted);
    the task goes back to the queue. Returns the task id."""
    return queue(db).retract(annotator, label_id).result()


def progress(db: Store, annotator: str, lease_s: int = LEASE_S) -> dict[str, int]:
    """What the progress bar shows: labels done today, done in total, tasks left for this annotator."""
    return queue(db).progress(annotator, lease_s)


def my_labels(db: Store, annotator: str, limit: int = 20) -> list[dict]:
    """This annotator's current labels, newest first (never anyone else's)."""
    return db.query("""SELECT l.id AS label_id, l.task_id, t.kind, l.ranking, l.margin_level,
                              l.rationale, l.created_at
                       FROM labels l JOIN tasks t ON t.id = l.task_id
                       WHERE l.annotator = ? AND l.superseded_by IS NULL AND l.source = 'human'
                       ORDER BY l.created_at DESC, l.id LIMIT ?""", [annotator, int(limit)])


def open_claims(db: Store) -> list[dict]:
    """Every claim held now (live or past its lease), oldest first."""
    return queue(db).claims()


def upcoming_tasks(db: Store, annotator: str, n: int) -> list[str]:
    """Up to ``n`` tasks this annotator is likely to get next (a hint, e.g. to prefetch texts).
    Under a ranked order every annotator walks the same front, so which of the next tasks
    this one gets depends on the others: then up to ``n`` per annotator holding a claim."""
    return queue(db).upcoming(annotator, n)


def queue(db: Store) -> "Queue":
    """The queue of this store: its index and writer (created on first use)."""
    q = db.memo.get("queue")
    if q is None:
        with _create_lock:
            q = db.memo.get("queue")
            if q is None:
                if db.read_only:
                    raise StoreError(f"{db.path} is open read-only")
                q = db.memo["queue"] = Queue(db)
                db.on_close(q.writer.close)
    return q


_create_lock = threading.Lock()


def load_in_background(db: Store) -> threading.Thread:
    """Load the queue's index now, in a thread (the studio calls this at start): at a million
    tasks the load takes seconds, which the first annotator after a start would otherwise
    wait through. A failed load is left for the first queue call to report."""
    def load() -> None:
        try:
            queue(db).index.sync()
        except Exception:        # (closed meanwhile, or a broken table: the next call says why)
            pass
    thread = threading.Thread(target=load, name="queue-load", daemon=True)
    thread.start()
    return thread


class Queue:
    """One store's queue: its in-memory index and the writer that commits what the index records.
    Every action reads and changes the index under its lock; writes go to the writer."""

    def __init__(self, db: Store):
        self.index = QueueIndex(db)
        self.writer = QueueWriter(self.index)

    def next_task(self, u: str, lease_s: float = LEASE_S) -> str | None:
        ix = self.index
        ix.sync()
        with ix.lock:
            ix.expire(lease_s)
            quiet = not ix.claims_dirty
            chosen = ix.pick(u)
            if chosen is None:
                ix.release(u)
            else:
                ix.claim(u, chosen)
            if quiet and ix.claims_dirty:
                ix.wake.notify()     # the writer writes claims within CLAIM_FLUSH_S
            return chosen

    def upcoming(self, u: str, n: int) -> list[str]:
        ix = self.index
        ix.sync()
        with ix.lock:
            if not ix.cycle:
                return []
            start = ix.start_of(u)
            c = min(ix.cursors.get(u, {}).values(), default=0)
            if ix.ranked:     # (a prefetch of n would miss: the others take most of them)
                n *= max(1, sum(1 for held in ix.claims_by.values() if held.live))
            out = []
            while c < len(ix.cycle) and len(out) < n:
                t = ix.cycle[(start + c) % len(ix.cycle)]
                if ix.level(t, u) is not None:
                    out.append(t)
                c += 1
            return out

    def submit(self, u: str, t: str, ranking: Any, *, margin_level: str | None = None,
               rationale: str | None = None, duration_ms: int | None = None,
               levels: dict[str, float] | None = None) -> Future:
        """Validate and record a label; the returned future resolves after its COMMIT."""
        ix = self.index
        if not isinstance(t, str) or not t:
            raise StoreError("task_id must be a task id string")
        if rationale is not None and len(rationale) > MAX_RATIONALE:
            raise StoreError(f"the rationale is longer than {MAX_RATIONALE} characters")
        ix.sync()
        with ix.lock:
            if t not in ix.required:
                raise StoreError(f"unknown task id {t!r}")
            kind, response_ids = ix.kind[t], ix.response_ids(t)
        if kind == "ranking" and margin_level:
            raise StoreError("margins are for pairwise tasks; a ranking has none")
        task = {"id": t, "response_ids": response_ids}
        row = label_row(task, u, ranking, margin_level=margin_level or None,
                        levels=levels if levels is not None else ix.levels,
                        rationale=rationale, duration_ms=duration_ms,
                        shown_order=shown_order(t, u, response_ids))
        now = dt.datetime.now()
        row["created_at"] = now
        with ix.lock:
            held = ix.claims_by.get(u)
            held = held if held is not None and held.task_id == t else None
            if held is None and not ix.labelled_before(t, u):
                raise StoreError(f"task {t!r} was not handed to {u!r}: ask next_task for it")
            if row["duration_ms"] is None and held is not None:
                row["duration_ms"] = int((now - held.since).total_seconds() * 1000)
            current = ix.current.get((t, u))
            op = Pending("label", u, t, row=row, supersedes=current and current[0],
                         clear_skip=t in ix.skips.get(u, ()))
            op.reply = {"label_id": row["id"], "task_id": t, "superseded": op.supersedes}
            ix.enqueue(op)
        return op.done

    def skip(self, u: str, t: str) -> Future:
        ix = self.index
        ix.sync()
        with ix.lock:
            if t not in ix.required:
                raise StoreError(f"unknown task id {t!r}")
            held = ix.claims_by.get(u)
            if held is not None and held.task_id == t:
                ix.release(u)
            op = Pending("skip", u, t, skipped_at=dt.datetime.now())
            ix.enqueue(op)
        return op.done

    def retract(self, u: str, label_id: str) -> Future:
        ix = self.index
        ix.sync()
        with ix.lock:
            t, owner = ix.label_of.get(label_id, (None, None))
            if t is not None and owner == u:
                op = Pending("retract", u, t, supersedes=label_id, reply=t)
                ix.enqueue(op)
                return op.done
        # not a current human label of u's: the generic path says why (or takes it back)
        retract_label(ix.db, label_id, annotator=u)
        done: Future = Future()
        done.set_result(t)
        return done

    def progress(self, u: str, lease_s: float = LEASE_S) -> dict[str, int]:
        ix = self.index
        ix.sync()
        with ix.lock:
            ix.expire(lease_s)
            left = ix.n_open - ix.open_labelled[u]
            held = ix.claims_by.get(u)
            if held is not None and held.live and ix.free(held.task_id) == 0:
                left += 1              # my own claim does not make my task "taken" for me
            today = ix.done_on.get(u, Counter())[dt.date.today()]
            return {"done_today": int(today), "done_total": int(ix.done_total[u]),
                    "left": int(left)}

    def claims(self) -> list[dict]:
        ix = self.index
        ix.sync()
        with ix.lock:
            rows = [{"task_id": c.task_id, "annotator": u, "claimed_at": c.since, "live": c.live}
                    for u, c in ix.claims_by.items()]
        return sorted(rows, key=lambda r: r["claimed_at"])

