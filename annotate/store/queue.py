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
lives in memory in that process: ``QueueIndex``, loaded from the tables on first use and
updated by every queue action under one lock. ``next_task`` is a Python operation with no
SQL, and since the check and the claim happen under that lock, the last open slot never goes
to two annotators. ``submit_label`` validates in Python, records the label in the index and
hands the row to one writer thread, which commits every label waiting at that moment in one
transaction (group commit) and answers each caller only after COMMIT: a label acknowledged
is on disk. Claims are kept in memory and written to the ``claims`` table lazily (with the
next batch, or within ``CLAIM_FLUSH_S``), so a lease usually survives a restart but need not.
Any other write to the database (an import, an undo through ``labels.retract_label``, a
changed overlap) is noticed through ``Store.queue_commits`` and the index is reloaded from
the tables, with the labels still waiting for the writer applied on top; writes that touch
none of the queue's tables (runs, metrics, users) say so and cost no reload.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import random
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Sequence

from .db import Store, StoreError
from .items import insert_rows
from .labels import RETRACTED, label_row, margin_levels, retract_label

LEASE_S = 30 * 60
MAX_RATIONALE = 4000
CLAIM_FLUSH_S = 1.0   # claims are written to their table at most this often (and at close)


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
    return index(db).next_task(annotator, lease_s)


def skip_task(db: Store, annotator: str, task_id: str) -> None:
    """Give the task back; it returns to this annotator only after every unskipped task."""
    index(db).skip(annotator, task_id).result()


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
    return index(db).submit(annotator, task_id, ranking, margin_level=margin_level,
                            rationale=rationale, duration_ms=duration_ms, levels=levels)


def undo_label(db: Store, annotator: str, label_id: str) -> str:
    """Withdraw one of the annotator's current labels (the row stays, marked as retracted);
    the task goes back to the queue. Returns the task id."""
    return index(db).retract(annotator, label_id).result()


def progress(db: Store, annotator: str, lease_s: int = LEASE_S) -> dict[str, int]:
    """What the progress bar shows: labels done today, done in total, tasks left for this annotator."""
    return index(db).progress(annotator, lease_s)


def my_labels(db: Store, annotator: str, limit: int = 20) -> list[dict]:
    """This annotator's current labels, newest first (never anyone else's)."""
    return db.query("""SELECT l.id AS label_id, l.task_id, t.kind, l.ranking, l.margin_level,
                              l.rationale, l.created_at
                       FROM labels l JOIN tasks t ON t.id = l.task_id
                       WHERE l.annotator = ? AND l.superseded_by IS NULL AND l.source = 'human'
                       ORDER BY l.created_at DESC, l.id LIMIT ?""", [annotator, int(limit)])


def open_claims(db: Store) -> list[dict]:
    """Every claim held now (live or past its lease), oldest first."""
    return index(db).claims()


def upcoming_tasks(db: Store, annotator: str, n: int) -> list[str]:
    """Up to ``n`` tasks this annotator is likely to get next (a hint, e.g. to prefetch texts)."""
    return index(db).upcoming(annotator, n)


def index(db: Store) -> "QueueIndex":
    """The queue's in-memory index of this store (created on first use)."""
    idx = db.memo.get("queue")
    if idx is None:
        with _create_lock:
            idx = db.memo.get("queue")
            if idx is None:
                if db.read_only:
                    raise StoreError(f"{db.path} is open read-only")
                idx = db.memo["queue"] = QueueIndex(db)
                db.on_close(idx.close)
    return idx


_create_lock = threading.Lock()


# -- the index -------------------------------------------------------------------------------

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

    Every field is guarded by ``lock``. ``_free(t) = required - labels - live claims``; a task
    is open while it is positive. For the progress bar the index keeps ``n_open`` (tasks
    open) and, per annotator, how many of the tasks they labelled are still open, so "left
    in your queue" is a subtraction, not a scan.

    Picking: tasks sit once in a fixed order (by a hash of their id); each annotator walks
    that cycle from their own starting point with one cursor per level of "taken" (labels +
    claims). A task passed over because it was full, labelled or taken stays passed over
    until something frees a slot on it; that event puts it in every annotator's ``extra`` set,
    which each pick looks at besides the cursor. So a pick is amortised O(1).
    """

    def __init__(self, db: Store):
        self.db = db
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)   # the writer waits here for work
        self.levels = margin_levels(db)
        self.synced = -1                 # db.queue_commits this state reflects (-1: load first)
        self.pending: deque[Pending] = deque()
        self.claims_dirty: set[str] = set()   # annotators whose claim the table does not show
        self.claims_by: dict[str, Claim] = {}
        self.claims_written = time.monotonic()
        self._loaded_claims = False
        self.closing = False
        self.writer = threading.Thread(target=self._write_loop, name="prefstudio-queue-writer",
                                       daemon=True)
        self.writer.start()

    # -- loading ----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Reload from the tables if anything but our own writer committed since the last look."""
        if self.synced == self.db.queue_commits:
            return
        with self.db._write_lock:      # no commit can happen while we read (lock order: db, index)
            with self.lock:
                if self.synced != self.db.queue_commits:
                    self._load()

    def _load(self) -> None:
        cur = self.db.cursor()
        tasks = cur.execute("SELECT id, kind, response_ids, required_labels FROM tasks").fetchall()
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

        self.kind = {t: k for t, k, _, _ in tasks}
        self.response_ids = {t: tuple(ids) for t, _, ids, _ in tasks}
        self.required = {t: int(r) for t, _, _, r in tasks}
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
            self._apply(op)
        self._count_open()
        ids = sorted(self.required, key=lambda t: (zlib.crc32(t.encode()), t))
        if ids != getattr(self, "cycle", None):
            self.cycle = ids
            self.position = {t: i for i, t in enumerate(ids)}
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
        self.n_open = sum(1 for t in self.required if self._free(t) > 0)
        self.open_labelled: Counter[str] = Counter()
        for t, who in self.labellers.items():
            if self._free(t) > 0:
                for u in who:
                    self.open_labelled[u] += 1

    # -- counting ---------------------------------------------------------------------------
    def _free(self, t: str) -> int:
        return self.required[t] - self.labels[t] - self.live[t]

    def _shift(self, t: str, labels: int = 0, claims: int = 0) -> None:
        """Change a task's label / live-claim counts, keeping the open counts right."""
        was = self._free(t) > 0
        self.labels[t] += labels
        self.live[t] += claims
        now = self._free(t) > 0
        if was != now:
            step = 1 if now else -1
            self.n_open += step
            for u in self.labellers.get(t, ()):
                self.open_labelled[u] += step
        if labels + claims < 0:        # a slot came free: every annotator must look again
            for extra in self.extra.values():
                extra.add(t)

    def _expire(self, lease_s: float) -> None:
        """Leases older than ``lease_s`` stop counting (the claim stays with its annotator)."""
        cutoff = time.time() - lease_s
        while self.expiry and self.expiry[0][0] <= cutoff:
            at, u, t = heapq.heappop(self.expiry)
            c = self.claims_by.get(u)
            if c is not None and c.live and c.task_id == t and c.at == at:
                c.live = False
                self._shift(t, claims=-1)

    def _release(self, u: str) -> None:
        c = self.claims_by.pop(u, None)
        if c is not None:
            self.claims_dirty.add(u)
            if c.live:
                self._shift(c.task_id, claims=-1)

    def _claim(self, u: str, t: str) -> None:
        c = self.claims_by.get(u)
        if c is not None and c.task_id == t:
            if c.live:
                return
            c.at, c.live = time.time(), True    # re-shown after its lease ran out: renew it
        else:
            self._release(u)
            c = self.claims_by[u] = Claim(t, dt.datetime.now(), time.time())
        self.claims_dirty.add(u)
        self._shift(t, claims=1)
        heapq.heappush(self.expiry, (c.at, u, t))

    def _apply(self, op: Pending) -> None:
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
            if self._free(t) > 0:
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
            if self._free(t) > 0:
                self.open_labelled[u] += 1
        self._record(t, u, op.row["id"], op.row["created_at"].date())
        self.history.add((t, u))
        self.skips.get(u, {}).pop(t, None)

    # -- picking ----------------------------------------------------------------------------
    def _level(self, t: str, u: str) -> int | None:
        """Labels + claims of others on ``t`` if ``u`` may take it (unskipped), else None."""
        if (t, u) in self.current or t in self.skips.get(u, ()):
            return None
        taken = self.labels[t] + self.live[t]
        held = self.claims_by.get(u)
        if held is not None and held.live and held.task_id == t:
            taken -= 1
        return taken if taken < self.required[t] else None

    def _pick(self, u: str) -> str | None:
        held = self.claims_by.get(u)
        if held is not None and (held.task_id, u) not in self.current:
            taken = self.labels[held.task_id] + self.live[held.task_id] - held.live
            if taken < self.required[held.task_id]:
                return held.task_id
        n = len(self.cycle)
        if n == 0:
            return None
        start = zlib.crc32(u.encode()) % n
        rank = lambda t: (self.position[t] - start) % n     # noqa: E731  (order for this annotator)
        cursors = self.cursors.setdefault(u, {})
        extra = self.extra.setdefault(u, set())
        for level in range(self.most_required):
            best = None
            for t in list(extra):
                got = self._level(t, u) if t in self.required else None
                if got is None:
                    extra.discard(t)    # it comes back through _shift if a slot frees up
                elif got == level and (best is None or rank(t) < rank(best)):
                    best = t
            c = cursors.get(level, 0)
            while c < n:
                got = self._level(self.cycle[(start + c) % n], u)
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

    # -- actions ----------------------------------------------------------------------------
    def next_task(self, u: str, lease_s: float = LEASE_S) -> str | None:
        self._sync()
        with self.lock:
            self._expire(lease_s)
            quiet = not self.claims_dirty
            chosen = self._pick(u)
            if chosen is None:
                self._release(u)
            else:
                self._claim(u, chosen)
            if quiet and self.claims_dirty:
                self.wake.notify()     # the writer writes claims within CLAIM_FLUSH_S
            return chosen

    def upcoming(self, u: str, n: int) -> list[str]:
        self._sync()
        with self.lock:
            if not self.cycle:
                return []
            start = zlib.crc32(u.encode()) % len(self.cycle)
            c = min(self.cursors.get(u, {}).values(), default=0)
            out = []
            while c < len(self.cycle) and len(out) < n:
                t = self.cycle[(start + c) % len(self.cycle)]
                if self._level(t, u) is not None:
                    out.append(t)
                c += 1
            return out

    def submit(self, u: str, t: str, ranking: Any, *, margin_level: str | None = None,
               rationale: str | None = None, duration_ms: int | None = None,
               levels: dict[str, float] | None = None) -> Future:
        """Validate and record a label; the returned future resolves after its COMMIT."""
        if not isinstance(t, str) or not t:
            raise StoreError("task_id must be a task id string")
        if rationale is not None and len(rationale) > MAX_RATIONALE:
            raise StoreError(f"the rationale is longer than {MAX_RATIONALE} characters")
        self._sync()
        with self.lock:
            if t not in self.required:
                raise StoreError(f"unknown task id {t!r}")
            kind, response_ids = self.kind[t], self.response_ids[t]
        if kind == "ranking" and margin_level:
            raise StoreError("margins are for pairwise tasks; a ranking has none")
        task = {"id": t, "response_ids": response_ids}
        row = label_row(task, u, ranking, margin_level=margin_level or None,
                        levels=levels if levels is not None else self.levels,
                        rationale=rationale, duration_ms=duration_ms,
                        shown_order=shown_order(t, u, response_ids))
        now = dt.datetime.now()
        row["created_at"] = now
        with self.lock:
            held = self.claims_by.get(u)
            held = held if held is not None and held.task_id == t else None
            if held is None and (t, u) not in self.history:
                raise StoreError(f"task {t!r} was not handed to {u!r}: ask next_task for it")
            if row["duration_ms"] is None and held is not None:
                row["duration_ms"] = int((now - held.since).total_seconds() * 1000)
            current = self.current.get((t, u))
            op = Pending("label", u, t, row=row, supersedes=current and current[0],
                         clear_skip=t in self.skips.get(u, ()))
            op.reply = {"label_id": row["id"], "task_id": t, "superseded": op.supersedes}
            self._enqueue(op)
        return op.done

    def skip(self, u: str, t: str) -> Future:
        self._sync()
        with self.lock:
            if t not in self.required:
                raise StoreError(f"unknown task id {t!r}")
            held = self.claims_by.get(u)
            if held is not None and held.task_id == t:
                self._release(u)
            op = Pending("skip", u, t, skipped_at=dt.datetime.now())
            self._enqueue(op)
        return op.done

    def retract(self, u: str, label_id: str) -> Future:
        self._sync()
        with self.lock:
            t, owner = self.label_of.get(label_id, (None, None))
            if t is not None and owner == u:
                op = Pending("retract", u, t, supersedes=label_id, reply=t)
                self._enqueue(op)
                return op.done
        # not a current human label of u's: the generic path says why (or takes it back)
        retract_label(self.db, label_id, annotator=u)
        done: Future = Future()
        done.set_result(t)
        return done

    def progress(self, u: str, lease_s: float = LEASE_S) -> dict[str, int]:
        self._sync()
        with self.lock:
            self._expire(lease_s)
            left = self.n_open - self.open_labelled[u]
            held = self.claims_by.get(u)
            if held is not None and held.live and self._free(held.task_id) == 0:
                left += 1              # my own claim does not make my task "taken" for me
            today = self.done_on.get(u, Counter())[dt.date.today()]
            return {"done_today": int(today), "done_total": int(self.done_total[u]),
                    "left": int(left)}

    def claims(self) -> list[dict]:
        self._sync()
        with self.lock:
            rows = [{"task_id": c.task_id, "annotator": u, "claimed_at": c.since, "live": c.live}
                    for u, c in self.claims_by.items()]
        return sorted(rows, key=lambda r: r["claimed_at"])

    # -- the writer (group commit) -------------------------------------------------------------
    def _enqueue(self, op: Pending) -> None:
        """(Under ``lock``.) Record a write and hand it to the writer. Refused once the store
        is closing: the writer may have stopped, and the caller would wait for ever."""
        if self.closing:
            raise StoreError("the studio is shutting down; nothing was saved: try again")
        self._apply(op)
        self.pending.append(op)
        self.wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closing:
                    if not self.claims_dirty:
                        self.wake.wait()
                        continue
                    wait = self.claims_written + CLAIM_FLUSH_S - time.monotonic()
                    if wait <= 0:
                        break               # claims waited long enough: write them
                    self.wake.wait(wait)
                if self.closing and not self.pending and not self.claims_dirty:
                    return
            self._flush()

    def _flush(self) -> None:
        """Commit every waiting write in one transaction, then answer their callers."""
        db = self.db
        with db._write_lock:
            with self.lock:
                ops = list(self.pending)
                dirty = []
                if self.closing or time.monotonic() - self.claims_written >= CLAIM_FLUSH_S:
                    dirty = sorted(self.claims_dirty)
                    self.claims_dirty.clear()
                    self.claims_written = time.monotonic()
                claims = [{"task_id": self.claims_by[u].task_id, "annotator": u,
                           "claimed_at": self.claims_by[u].since}
                          for u in dirty if u in self.claims_by]
            ours = self.synced == db.queue_commits   # nobody else wrote since our last look
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
            with self.lock:
                for _ in ops:
                    self.pending.popleft()
                self.synced = db.queue_commits if ours else -1
        for i, op in enumerate(ops):
            if i in failed:
                op.done.set_exception(failed[i])
            else:
                op.done.set_result(op.reply)

    @staticmethod
    def _write(cur, ops: list[Pending], dirty: list[str], claims: list[dict]) -> None:
        labels = [op.row for op in ops if op.kind == "label"]
        if labels:
            insert_rows(cur, "labels", labels)
        for op in ops:
            if op.kind == "label" and op.supersedes:
                cur.execute("UPDATE labels SET superseded_by = ? WHERE id = ? "
                            "AND superseded_by IS NULL", [op.row["id"], op.supersedes])
            if op.kind == "label" and op.clear_skip:
                cur.execute("DELETE FROM skips WHERE task_id = ? AND annotator = ?",
                            [op.task_id, op.annotator])
            if op.kind == "retract":
                cur.execute("UPDATE labels SET superseded_by = ? WHERE id = ? "
                            "AND superseded_by IS NULL", [RETRACTED + str(uuid.uuid4()), op.supersedes])
            if op.kind == "skip":
                cur.execute("INSERT INTO skips (task_id, annotator, skipped_at) VALUES (?, ?, ?) "
                            "ON CONFLICT DO UPDATE SET skipped_at = excluded.skipped_at",
                            [op.task_id, op.annotator, op.skipped_at])
        if dirty:
            cur.execute("DELETE FROM claims WHERE list_contains(?, annotator)", [dirty])
            insert_rows(cur, "claims", claims)

    def close(self) -> None:
        """Write what is waiting and stop the writer (the store is closing)."""
        with self.lock:
            self.closing = True
            self.wake.notify()
        self.writer.join()
