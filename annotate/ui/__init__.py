"""The annotation studio in the browser: ``serve(db_path, host, port, workspace)``.

One process owns the database while the studio runs (see docs/architecture.md); people log in
with the users stored in it (Gradio's login, scrypt-hashed passwords). On the first start of
a workspace without users an ``admin`` is created and its one-time password printed once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from .. import store
from ..store.queue import load_in_background

SWITCH_INTERVAL_S = 0.001   # how soon a thread waiting for the GIL gets it (Python's default: 5 ms)


def serve(db_path: str | Path, host: str = "127.0.0.1", port: int = 7860,
          workspace: str | Path = "workspace", *, block: bool = True, allow_origins=(),
          session_hours: float = 12.0, parse_command=None, max_jobs: int = 1):
    """Open the database (this process owns it while serving) and start the studio.

    ``allow_origins``: origins besides the studio's own whose pages may act as a logged-in
    user (e.g. the public https origin of a proxy in front); ``session_hours``: how long a
    login lasts; ``parse_command``: the CLI's parser, which checks a job's options before it
    starts (``cli.parse_command``; without it the Jobs tab refuses to start jobs); ``max_jobs``:
    jobs that run at once (the others queue). With ``block=False`` it returns at once with (demo, db, studio) for tests.
    """
    from .guard import normalise_origins
    normalise_origins(allow_origins)  # refuse a bad --allow-origin before opening anything
    workspace = Path(workspace).resolve()
    # uploads and Gradio's file cache stay inside the workspace
    os.environ["GRADIO_TEMP_DIR"] = str(workspace / "tmp")
    # Gradio's queue rebuilds its monitoring summary (a pandas table of its last 10,000
    # events) after every event, even with monitoring off, as the studio has it: not needed
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(10**9))
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    # The event loop thread is busy while many annotators click; the queue's writer thread
    # needs the GIL back after each of its DuckDB calls (which release it), and by default a
    # waiting thread gets it only after 5 ms: several of those waits went into every group
    # commit, so into every label's answer. 1 ms (BENCHMARKS.md, annotation).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    db = store.Store(db_path)
    demo = studio = None
    try:
        password = store.ensure_first_admin(db)
        if password:
            print(f"prefstudio: created user 'admin' with one-time password: {password}\n"
                  f"prefstudio: it is shown only now; log in and change it in the Users tab "
                  f"(Set password)", flush=True)
        from .layout import build_app
        demo, launch, studio = build_app(db, workspace, allow_origins=allow_origins,
                                         session_hours=session_hours,
                                         parse_command=parse_command, max_jobs=max_jobs)
        studio.exports.mkdir(parents=True, exist_ok=True)
        studio.jobs.watch()  # ingest run folders of jobs started from the Jobs tab
        load_in_background(db)   # the queue's index: not on the first annotator's time
        # _frontend=False skips Gradio's self-check (a HEAD of its own URL with a 3 s timeout,
        # to tell notebooks they need a share link): under a storm of annotators reconnecting
        # to a restarted studio it timed out, and launch raised while the server ran on
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=False,
                    _frontend=False, **launch)
        _check_guard(demo)
    except BaseException:
        shut_down(demo, db, studio)   # a failed start must not keep the file locked, or unflushed
        raise
    if not block:
        return demo, db, studio
    try:
        demo.block_thread()   # until Ctrl-C or SIGTERM (app.py turns both into KeyboardInterrupt)
    finally:
        shut_down(demo, db, studio)
    return demo, db, studio


def _check_guard(demo) -> None:
    """The Guard (origin check, strangers kept out) is put around Gradio's app by a lifespan
    hook, which relies on Starlette internals: if a Gradio upgrade ever skipped it, refuse to
    serve rather than serve unguarded."""
    from .guard import Guard
    if not isinstance(getattr(demo.app, "middleware_stack", None), Guard):
        raise RuntimeError("the studio's request guard is not in place (a Gradio change?); "
                           "refusing to serve without it")


def shut_down(demo, db: store.Store, studio) -> None:
    """Stop taking requests, then close the store: the queue's writer commits every label it
    acknowledged or still holds, a CHECKPOINT folds the ``.wal`` into the ``.duckdb`` file and
    the file is released. Running jobs are left to finish; the next start takes them in."""
    if threading.current_thread() is threading.main_thread():
        # a second Ctrl-C must not cut the final flush short (kill -9 still can: the WAL recovers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if demo is not None:
        demo.close()
    if studio is not None:
        studio.jobs.close()
    db.close()
    print("prefstudio: stopped; every acknowledged label is in " + str(db.path), flush=True)
