"""The queue's in-memory index: tasks, current human labels, claims and skips of one store,
kept by the process that owns it, and the pick of an annotator's next task.

It speaks SQL only to load itself (``sync``); ``queue.py`` changes it through ``claim``,
``release``, ``expire`` and ``apply`` under ``lock``, and ``queue_writer.py`` writes the same
changes (``Pending``) to the tables.
"""
from __future__ import annotations

import datetime as dt
import heapq
import json
import threading
import time
import zlib
from collections import Counter, deque
from itertools import chain, repeat
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .db import Store, StoreError
from .labels import margin_levels
from .priorities import queue_orders, ranks_for_queue

EPOCH = dt.date(1970, 1, 1)


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
        """Read the queue's tables into memory. Column-wise (``fetchnumpy``, ``dict(zip(...))``,
        ``Counter`` over a column): at a million tasks and labels a row-by-row loop took 30 s,
        which the first annotator after a start waited through (BENCHMARKS.md, scale)."""
        cur = self.db.cursor()
        # ORDER BY id: the cycle's ties (same rank and hash) fall in id order (a stable sort)
        # response_ids as JSON text: one string per task, parsed when a label comes (a tuple
        # per task made from DuckDB's list column cost 1.7 s at 1M tasks)
        tasks = cur.execute("SELECT id, kind, to_json(response_ids) AS response_ids, "
                            "required_labels, round FROM tasks ORDER BY id").fetchnumpy()
        current = cur.execute("""SELECT l.task_id, l.annotator, l.id,
                                        l.created_at::DATE - DATE '1970-01-01' AS day
                                 FROM labels l SEMI JOIN tasks t ON t.id = l.task_id
                                 WHERE l.superseded_by IS NULL AND l.source = 'human'""").fetchnumpy()
        past = cur.execute("""SELECT task_id, annotator FROM labels
                              EXCEPT SELECT task_id, annotator FROM labels
                                     WHERE superseded_by IS NULL AND source = 'human'""").fetchall()
        skips = cur.execute("SELECT task_id, annotator, skipped_at FROM skips").fetchall()
        if not self._loaded_claims:     # later reloads keep the claims in memory (they lead)
            now = time.time()
            for t, u, since in cur.execute("SELECT task_id, annotator, claimed_at FROM claims "
                                           "ORDER BY claimed_at").fetchall():
                self.claims_by[u] = Claim(t, since, now - (dt.datetime.now() - since).total_seconds())
            self._loaded_claims = True

        ids = tasks["id"].tolist()
        self.kind = dict(zip(ids, tasks["kind"].tolist()))
        self.response_json = dict(zip(ids, tasks["response_ids"].tolist()))
        self.required = dict(zip(ids, tasks["required_labels"].tolist()))
        ranks = ranks_for_queue(cur, dict(zip(ids, tasks["round"].tolist())),
                                queue_orders(self.db))
        self.most_required = max(self.required.values(), default=0)

        t_col, u_col = current["task_id"].tolist(), current["annotator"].tolist()
        id_col = current["id"].tolist()
        day_col = current["day"].tolist()
        day_of = {d: EPOCH + dt.timedelta(days=d) for d in set(day_col)}     # few distinct days
        days = [day_of[d] for d in day_col]
        self.labels: Counter[str] = Counter(t_col)
        self.current: dict[tuple[str, str], tuple[str, dt.date]] = dict(
            zip(zip(t_col, u_col), zip(id_col, days)))
        self.label_of: dict[str, tuple[str, str]] = dict(zip(id_col, zip(t_col, u_col)))
        self.labellers: dict[str, tuple[str, ...]] = {}     # task -> its current labellers
        get = self.labellers.get
        for t, u in zip(t_col, u_col):
            self.labellers[t] = get(t, ()) + (u,)
        self.done_total: Counter[str] = Counter(u_col)
        self.done_on: dict[str, Counter] = {}
        for (u, day), n in Counter(zip(u_col, days)).items():
            self.done_on.setdefault(u, Counter())[day] = n
        self.past = set(past)          # (task, annotator) labelled before, no current label now
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
        # ranked tasks first, by rank; the rest (default order, or not ranked yet) by hash,
        # ties by id (np.lexsort is stable; ids came sorted)
        crc = np.fromiter((zlib.crc32(t.encode()) for t in ids), dtype=np.uint32, count=len(ids))
        rank = np.array([ranks.get(t, len(ranks)) for t in ids] if ranks else [0] * len(ids),
                        dtype=np.int64)
        ids = [ids[i] for i in np.lexsort((crc, rank)).tolist()]
        if ids != getattr(self, "cycle", None):
            self.cycle = ids
            self.position = dict(zip(ids, range(len(ids))))
        self.ranked = bool(ranks)
        self.cursors: dict[str, dict[int, int]] = {}
        self.extra: dict[str, set[str]] = {}
        self.synced = self.db.queue_commits

    def _record(self, t: str, u: str, label_id: str, day: dt.date) -> None:
        """``label_id`` is now u's current label of t (the task's count is kept by the caller)."""
        who = self.labellers.get(t, ())
        if u not in who:
            self.labellers[t] = who + (u,)
        self.current[(t, u)] = (label_id, day)
        self.label_of[label_id] = (t, u)
        self.done_total[u] += 1
        on = self.done_on.get(u)
        if on is None:
            on = self.done_on[u] = Counter()
        on[day] += 1

    def response_ids(self, t: str) -> tuple[str, ...]:
        return tuple(json.loads(self.response_json[t]))

    def labelled_before(self, t: str, u: str) -> bool:
        """Has ``u`` ever labelled ``t`` (a current label, or one edited away or withdrawn)?"""
        return (t, u) in self.current or (t, u) in self.past

    def _count_open(self) -> None:
        """``n_open``, ``open_labelled`` and ``by_taken`` from the counts (at load): one pass over
        the tasks with labels or claims, C-speed counts for the rest."""
        required, get = self.required, self.labellers.get
        taken: dict[str, int] = self.labels                  # task -> labels + live claims
        if self.live:
            taken = dict(taken)
            for t, k in self.live.items():
                taken[t] = taken.get(t, 0) + k
        self.by_taken: Counter[int] = Counter(taken.values())   # labels + claims -> tasks
        self.by_taken[0] += len(required) - len(taken)
        open_taken = [t for t, k in taken.items() if required[t] > k]
        untaken_open = (len(required) - len(taken) if min(required.values(), default=1) > 0 else
                        sum(1 for t, r in required.items() if r > 0 and t not in taken))
        self.n_open = len(open_taken) + untaken_open
        self.open_labelled: Counter[str] = Counter(chain.from_iterable(map(get, open_taken, repeat(()))))

    # -- counting ---------------------------------------------------------------------------
    def free(self, t: str) -> int:
        return self.required[t] - self.labels[t] - self.live[t]

    def _shift(self, t: str, labels: int = 0, claims: int = 0) -> None:
        """Change a task's label / live-claim counts, keeping the open counts right."""
        was = self.free(t) > 0
        self.by_taken[self.labels[t] + self.live[t]] -= 1
        self.labels[t] += labels
        self.live[t] += claims
        self.by_taken[self.labels[t] + self.live[t]] += 1
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
            self.labellers[t] = tuple(v for v in self.labellers[t] if v != u)
            self.past.add((t, u))
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
            if not any(self.by_taken[k] > 0 for k in range(level + 1)):
                c = n       # no task has this few labels + claims: a walk would pass them all
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
