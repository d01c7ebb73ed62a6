"""The queue's in-memory index: tasks, current human labels, claims and skips of one store,
kept by the process that owns it, and the pick of an annotator's next task.

It speaks SQL only to load itself (``sync``); ``queue.py`` changes it through ``claim``,
``release``, ``expire`` and ``apply`` under ``lock``, and ``queue_writer.py`` writes the same
changes (``Pending``) to the tables.
"""
from __future__ import annotations

import datetime as dt
import heapq
import threading
import time
import zlib
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .db import Store, StoreError
from .labels import margin_levels
from .priorities import queue_orders, ranks_for_queue


@dataclass
class Claim:
    task_id: str
    since: dt.datetime      # when it was handed out (the label's duration counts from here)
    at: float               # when the lease (re)started, time.time()
    live: bool = True       # False once the lease ran out: the slot is free for others


@dataclass
class Pending:
    """A write waiting for the writer thread; ``done`` is resolved after its COMMIT."""
    kind: str                                   # "label" | "skip" | "retract"
    annotator: str
    task_id: str
    row: dict | None = None                     # the label row
    supersedes: str | None = None               # the label replaced (a retract: withdrawn)
    skipped_at: dt.datetime | None = None
    clear_skip: bool = False                    # a label deletes the annotator's skip of it
    reply: Any = None                           # what the caller gets once committed
    done: Future = field(default_factory=Future)


class QueueIndex:
    """Tasks, current human labels, claims and skips in memory, for the owning process.

    Every field is guarded by ``lock``. ``free(t) = required - labels - live claims``; a task
    is open while it is positive. For the progress bar the index keeps ``n_open`` (tasks
    open) and, per annotator, how many of the tasks they labelled are still open, so "left
    in your queue" is a subtraction, not a scan.

    Picking: tasks sit once in a fixed order (by a hash of their id); each annotator walks
    that cycle from their own starting point with one cursor per level of "taken" (labels +
    claims). A task passed over because it was full, labelled or taken stays passed over
    until something frees a slot on it; that event puts it in every annotator's ``extra`` set,
    which each pick looks at besides the cursor. So a pick is amortised O(1).

    Under an active order (``priorities.py``) the cycle is sorted by the ranks a queue-order
    job stored (unranked tasks after, by hash) and every annotator starts at the top; the
    walk, the levels and the claims are the same, so fair overlap holds: every task gets
    its first label before any gets its second, the most informative first.
    """

    def __init__(self, db: Store):
        self.db = db
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)   # the writer waits here for work
        self.levels = margin_levels(db)
        self.synced = -1                 # db.queue_commits this state reflects (-1: load first)
        self.pending: deque[Pending] = deque()       # written by the writer, oldest first
        self.claims_dirty: set[str] = set()   # annotators whose claim the table does not show
        self.claims_by: dict[str, Claim] = {}
        self.claims_written = time.monotonic()
        self._loaded_claims = False
        self.closing = False             # the store is closing: the writer drains and stops

    # -- loading ----------------------------------------------------------------------------
    def sync(self) -> None:
        """Reload from the tables if anything but our own writer committed since the last look."""
        if self.synced == self.db.queue_commits:
            return
        with self.db.write_lock:      # no commit can happen while we read (lock order: db, index)
            with self.lock:
                if self.synced != self.db.queue_commits:
                    self._load()

    def _load(self) -> None:
        cur = self.db.cursor()
        tasks = cur.execute("SELECT id, kind, response_ids, required_labels, round FROM tasks"
                            ).fetchall()
        current = cur.execute("""SELECT task_id, annotator, id, created_at::DATE FROM labels
                                 WHERE superseded_by IS NULL AND source = 'human'""").fetchall()
        history = cur.execute("SELECT DISTINCT task_id, annotator FROM labels").fetchall()
        skips = cur.execute("SELECT task_id, annotator, skipped_at FROM skips").fetchall()
        if not self._loaded_claims:     # later reloads keep the claims in memory (they lead)
            now = time.time()
            for t, u, since in cur.execute("SELECT task_id, annotator, claimed_at FROM claims "
                                           "ORDER BY claimed_at").fetchall():
                self.claims_by[u] = Claim(t, since, now - (dt.datetime.now() - since).total_seconds())
            self._loaded_claims = True

        self.kind = {t: k for t, k, _, _, _ in tasks}
        self.response_ids = {t: tuple(ids) for t, _, ids, _, _ in tasks}
        self.required = {t: int(r) for t, _, _, r, _ in tasks}
        ranks = ranks_for_queue(cur, {t: rnd for t, _, _, _, rnd in tasks}, queue_orders(self.db))
        self.most_required = max(self.required.values(), default=0)
        self.labels: Counter[str] = Counter()
        self.labellers: dict[str, set[str]] = {}
        self.current: dict[tuple[str, str], tuple[str, dt.date]] = {}
        self.label_of: dict[str, tuple[str, str]] = {}      # current label id -> (task, annotator)
        self.done_total: Counter[str] = Counter()
        self.done_on: dict[str, Counter] = {}
        for t, u, label_id, day in current:
            if t in self.required:
                self.labels[t] += 1
                self._record(t, u, label_id, day)
        self.history = {(t, u) for t, u in history}
        self.skips: dict[str, dict[str, dt.datetime]] = {}
        for t, u, at in skips:
            if t in self.required:
                self.skips.setdefault(u, {})[t] = at
        self.claims_by = {u: c for u, c in self.claims_by.items() if c.task_id in self.required}
        self.live: Counter[str] = Counter(c.task_id for c in self.claims_by.values() if c.live)
        self.expiry = [(c.at, u, c.task_id) for u, c in self.claims_by.items() if c.live]
        heapq.heapify(self.expiry)
        for op in self.pending:         # written soon, not yet in the tables
            self.apply(op)
        self._count_open()
        # ranked tasks first, by rank; the rest (default order, or not ranked yet) by hash
        unranked = len(ranks)
        ids = sorted(self.required, key=lambda t: (ranks.get(t, unranked), zlib.crc32(t.encode()), t))
        if ids != getattr(self, "cycle", None):
            self.cycle = ids
            self.position = {t: i for i, t in enumerate(ids)}
        self.ranked = bool(ranks)
        self.cursors: dict[str, dict[int, int]] = {}
        self.extra: dict[str, set[str]] = {}
        self.synced = self.db.queue_commits

    def _record(self, t: str, u: str, label_id: str, day: dt.date) -> None:
        """``label_id`` is now u's current label of t (the task's count is kept by the caller)."""
        self.labellers.setdefault(t, set()).add(u)
        self.current[(t, u)] = (label_id, day)
        self.label_of[label_id] = (t, u)
        self.done_total[u] += 1
        self.done_on.setdefault(u, Counter())[day] += 1

    def _count_open(self) -> None:
        self.n_open = sum(1 for t in self.required if self.free(t) > 0)
        self.open_labelled: Counter[str] = Counter()
        for t, who in self.labellers.items():
            if self.free(t) > 0:
                for u in who:
                    self.open_labelled[u] += 1

    # -- counting ---------------------------------------------------------------------------
    def free(self, t: str) -> int:
        return self.required[t] - self.labels[t] - self.live[t]

    def _shift(self, t: str, labels: int = 0, claims: int = 0) -> None:
        """Change a task's label / live-claim counts, keeping the open counts right."""
        was = self.free(t) > 0
        self.labels[t] += labels
        self.live[t] += claims
        now = self.free(t) > 0
        if was != now:
            step = 1 if now else -1
            self.n_open += step
            for u in self.labellers.get(t, ()):
                self.open_labelled[u] += step
        if labels + claims < 0:        # a slot came free: every annotator must look again
            for extra in self.extra.values():
                extra.add(t)

    def expire(self, lease_s: float) -> None:
        """Leases older than ``lease_s`` stop counting (the claim stays with its annotator)."""
        cutoff = time.time() - lease_s
        while self.expiry and self.expiry[0][0] <= cutoff:
            at, u, t = heapq.heappop(self.expiry)
            c = self.claims_by.get(u)
            if c is not None and c.live and c.task_id == t and c.at == at:
                c.live = False
                self._shift(t, claims=-1)

    def release(self, u: str) -> None:
        c = self.claims_by.pop(u, None)
        if c is not None:
            self.claims_dirty.add(u)
            if c.live:
                self._shift(c.task_id, claims=-1)

    def claim(self, u: str, t: str) -> None:
        c = self.claims_by.get(u)
        if c is not None and c.task_id == t:
            if c.live:
                return
            c.at, c.live = time.time(), True    # re-shown after its lease ran out: renew it
        else:
            self.release(u)
            c = self.claims_by[u] = Claim(t, dt.datetime.now(), time.time())
        self.claims_dirty.add(u)
        self._shift(t, claims=1)
        heapq.heappush(self.expiry, (c.at, u, t))

    def apply(self, op: Pending) -> None:
        """Record a write in the index (at submit time, or again after a reload)."""
        u, t = op.annotator, op.task_id
        if op.kind == "skip":
            self.skips.setdefault(u, {})[t] = op.skipped_at
            return
        if op.kind == "retract":
            old = self.current.pop((t, u), None)
            if old is None or old[0] != op.supersedes:
                return                                # (gone already: nothing to take back)
            del self.label_of[old[0]]
            self.done_total[u] -= 1
            self.done_on[u][old[1]] -= 1
            if self.free(t) > 0:
                self.open_labelled[u] -= 1
            self.labellers[t].discard(u)
            self._shift(t, labels=-1)                 # a slot comes free
            return
        held = self.claims_by.get(u)
        if held is not None and held.task_id == t:   # the label uses up the claim
            del self.claims_by[u]
            self.claims_dirty.add(u)
        else:
            held = None
        old = self.current.pop((t, u), None)
        release = -1 if held is not None and held.live else 0
        if old is not None:                          # an edit: the count stays, the label changes
            del self.label_of[old[0]]
            self.done_total[u] -= 1
            self.done_on[u][old[1]] -= 1
            self._shift(t, claims=release)
        else:                                        # (u joins the labellers after the shift)
            self._shift(t, labels=1, claims=release)
            if self.free(t) > 0:
                self.open_labelled[u] += 1
        self._record(t, u, op.row["id"], op.row["created_at"].date())
        self.history.add((t, u))
        self.skips.get(u, {}).pop(t, None)

    def enqueue(self, op: Pending) -> None:
        """Record a write in the index now and hand it to the writer (call under ``lock``).
        Refused once the store is closing: the writer may have stopped, and the caller would
        wait for ever."""
        if self.closing:
            raise StoreError("the studio is shutting down; nothing was saved: try again")
        self.apply(op)
        self.pending.append(op)
        self.wake.notify()

    # -- picking ----------------------------------------------------------------------------
    def start_of(self, u: str) -> int:
        """Where ``u`` starts walking the cycle: a place of their own under the default order
        (annotators do not all queue for one task), the top when tasks are ranked (the rank
        is the point; claims still spread annotators over the top tasks)."""
        return 0 if self.ranked or not self.cycle else zlib.crc32(u.encode()) % len(self.cycle)

    def level(self, t: str, u: str) -> int | None:
        """Labels + claims of others on ``t`` if ``u`` may take it (unskipped), else None."""
        if (t, u) in self.current or t in self.skips.get(u, ()):
            return None
        taken = self.labels[t] + self.live[t]
        held = self.claims_by.get(u)
        if held is not None and held.live and held.task_id == t:
            taken -= 1
        return taken if taken < self.required[t] else None

    def pick(self, u: str) -> str | None:
        held = self.claims_by.get(u)
        if held is not None and (held.task_id, u) not in self.current:
            taken = self.labels[held.task_id] + self.live[held.task_id] - held.live
            if taken < self.required[held.task_id]:
                return held.task_id
        n = len(self.cycle)
        if n == 0:
            return None
        start = self.start_of(u)
        rank = lambda t: (self.position[t] - start) % n     # noqa: E731  (order for this annotator)
        cursors = self.cursors.setdefault(u, {})
        extra = self.extra.setdefault(u, set())
        for level in range(self.most_required):
            best = None
            for t in list(extra):
                got = self.level(t, u) if t in self.required else None
                if got is None:
                    extra.discard(t)    # it comes back through _shift if a slot frees up
                elif got == level and (best is None or rank(t) < rank(best)):
                    best = t
            c = cursors.get(level, 0)
            while c < n:
                got = self.level(self.cycle[(start + c) % n], u)
                if got is not None and got <= level:
                    break
                c += 1                  # full, labelled, skipped or busier: passed for good
            cursors[level] = c
            if c < n:
                t = self.cycle[(start + c) % n]
                if best is None or rank(t) < rank(best):
                    best = t
            if best is not None:
                return best
        skipped = [(at, t) for t, at in self.skips.get(u, {}).items()
                   if (t, u) not in self.current and t in self.required
                   and self.labels[t] + self.live[t] - (held is not None and held.live
                                                        and held.task_id == t) < self.required[t]]
        return min(skipped)[1] if skipped else None
