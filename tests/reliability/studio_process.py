"""`prefstudio serve` as its own process on a real DuckDB file, and annotators that drive it.

The durability tests need what a thread-hosted server (tests/studio_server.py) cannot give:
signals, kill -9 and restarts on the same file. The annotators are bench/annotate.py's
asyncio HTTP clients (one keep-alive connection and login cookie each; cheap enough that 64
of them and the server share this 2-core machine), speaking one of its three styles:
``rest`` (POST /api/<name>), ``run`` (POST /gradio_api/run/<name>) or ``call`` (Gradio's
queue and event stream, as gradio_client does).

A label counts as acknowledged only when its whole answer, with its label id, was read.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

from annotate import store
from annotation_data import seed_tasks
from bench.annotate import PASSWORD, call, login, start_server  # noqa: F401  (PASSWORD: tests)

# what a client sees when the server dies under it (refused, reset, cut-off or garbled answer)
SERVER_GONE = (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError)


def seed(db_path: Path, tasks: int, annotators: int, required: int) -> list[str]:
    """``tasks`` pairwise tasks of overlap ``required`` and annotators a0, a1, ...; their names."""
    names = [f"a{i}" for i in range(annotators)]
    with store.Store(db_path) as db:
        seed_tasks(db, pairwise=tasks, required=required)
        for name in names:
            store.add_user(db, name, "annotator", PASSWORD)
    return names


class Studio:
    """One `prefstudio serve` process on ``db_path`` (started at once)."""

    def __init__(self, workspace: Path, db_path: Path):
        self.proc, self.port = start_server(workspace, db_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the process to end; its exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no checkpoint."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@dataclass
class Outcome:
    """What the clients saw: acknowledged (label id, task id, annotator) and refusals."""
    acked: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)      # answers that refused a call
    cut_off: int = 0                                     # clients whose server went away
    ran_dry: int = 0                                     # clients that found no task left

    @property
    def ids(self) -> set[str]:
        return {label_id for label_id, _, _ in self.acked}


async def _annotate(port: int, user: str, mode: str, count: int | None, out: Outcome,
                    rng: random.Random) -> None:
    done, http = 0, None
    try:
        http = await login(port, user, mode)
        await http.open()
        while count is None or done < count:
            task = await call(http, "next_task", [], mode)
            if task is None:
                out.ran_dry += 1
                return
            ids = [r["id"] for r in task["responses"]]
            rng.shuffle(ids)
            reply = await call(http, "submit_label", [task["id"], json.dumps([[i] for i in ids]),
                                                      "better", ""], mode)
            out.acked.append((reply["label_id"], task["id"], user))
            done += 1
    except RuntimeError as err:              # the server answered, and refused
        out.errors.append(f"{user}: {err}")
    except SERVER_GONE:
        out.cut_off += 1
    finally:
        if http is not None:
            http.close()


async def _storm(port, users, modes, count, out, stop_pid, stop_after, stop_signal) -> None:
    clients = [asyncio.create_task(_annotate(port, u, modes[i % len(modes)], count, out,
                                             random.Random(i)))
               for i, u in enumerate(users)]
    if stop_pid is not None:
        while len(out.acked) < stop_after and not all(c.done() for c in clients):
            await asyncio.sleep(0.005)
        os.kill(stop_pid, stop_signal)           # mid-storm: writes in flight
    await asyncio.gather(*clients)


def annotate(port: int, users: list[str], modes: list[str], count: int | None = None, *,
             stop_pid: int | None = None, stop_after: int = 0,
             stop_signal: int = signal.SIGKILL) -> Outcome:
    """Every user labels ``count`` tasks (or until the server goes) at once, user i over
    ``modes[i % len(modes)]``. With ``stop_pid``, that process gets ``stop_signal`` as soon
    as ``stop_after`` labels are acknowledged, while others are still being written."""
    out = Outcome()
    asyncio.run(_storm(port, users, modes, count, out, stop_pid, stop_after, stop_signal))
    return out


def stored(db_path: Path) -> dict:
    """The database file as the truth (opened read-only: a ``.wal`` left by a kill is replayed
    in memory and left in place for the next server to recover)."""
    with store.Store(db_path, read_only=True) as db:
        rows = db.query("SELECT id, task_id, annotator, superseded_by IS NULL AS current "
                        "FROM labels WHERE source = 'human'")
        over = db.query("""SELECT count(*) AS n FROM (
                               SELECT t.id FROM tasks t JOIN labels l ON l.task_id = t.id
                               WHERE l.superseded_by IS NULL AND l.source = 'human'
                               GROUP BY t.id, t.required_labels
                               HAVING count(*) > t.required_labels)""")[0]["n"]
        twice = db.query("""SELECT count(*) AS n FROM (
                                SELECT task_id, annotator FROM labels
                                WHERE superseded_by IS NULL AND source = 'human'
                                GROUP BY ALL HAVING count(*) > 1)""")[0]["n"]
    ids = [r["id"] for r in rows]
    return {"ids": set(ids), "rows": len(ids), "current": sum(r["current"] for r in rows),
            "tasks_over_overlap": over, "annotator_twice_on_a_task": twice}


def wal_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".wal")
