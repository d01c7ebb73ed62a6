"""Run a command of app.py with every thread it starts under its own pyinstrument profiler.

    PROFILE_DIR=/tmp/prof python bench/profile_threads.py serve --db ... --port ...

pyinstrument samples one thread (the one that started it), and the studio's work is spread
over threads: uvicorn's event loop (the guard, Gradio's routes, the async handlers), anyio's
worker threads (sync handlers) and the queue's writer (group commit). Each thread started
after this wrapper gets a profiler of its own; when the thread's ``run`` returns (a clean
stop: SIGTERM or Ctrl-C) its profile is written to ``$PROFILE_DIR/<thread name>.txt`` (one
file per thread name, the busiest thread of that name kept). Used by ``bench/annotate.py
--profile DIR``. Threads still running at exit (anyio's idle workers) write nothing.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from pyinstrument import Profiler

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("PROFILE_DIR", "profile"))
_run = threading.Thread.run
_lock = threading.Lock()
_best: dict[str, float] = {}


def _profiled_run(self) -> None:
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        _run(self)
    finally:
        session = profiler.stop()
        name = self.name.split("(")[0].rstrip("-0123456789 ") or "thread"
        with _lock:   # keep the busiest thread of each name
            if session.cpu_time > _best.get(name, -1):
                _best[name] = session.cpu_time
                OUT.mkdir(parents=True, exist_ok=True)
                (OUT / f"{name}.txt").write_text(profiler.output_text(unicode=False, show_all=True))


if __name__ == "__main__":
    threading.Thread.run = _profiled_run
    sys.argv = [str(ROOT / "app.py"), *sys.argv[1:]]
    sys.path.insert(0, str(ROOT))
    os.chdir(os.getcwd())
    import runpy
    runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
