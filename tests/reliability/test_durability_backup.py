"""The backup procedure RELIABILITY.md gives, checked on real files.

- After a crash the recent commits are only in the ``.wal``: a copy of the ``.duckdb`` file
  alone misses them, a copy of both files (same folder, same names) has them all.
- ``EXPORT DATABASE`` of a stopped studio's file, then ``IMPORT DATABASE`` into a new file,
  gives back every row of every table, and prefstudio opens the result.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

from annotate import store
from annotation_data import seed_tasks
from studio_process import stored, wal_of

ROOT = Path(__file__).resolve().parents[2]


def crash_after_labelling(db_path: Path, n: int) -> None:
    """A process that owns the file, commits ``n`` labels, then dies by SIGKILL."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from annotate import store
        db = store.Store({str(db_path)!r})
        for _ in range({n}):
            t = store.next_task(db, "ann")
            ids = store.get_task(db, t)["response_ids"]
            store.submit_label(db, "ann", t, [[i] for i in ids], margin_level="better")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9


def test_after_a_crash_copy_the_wal_with_the_database(tmp_path):
    db_path = tmp_path / "ws" / "prefstudio.duckdb"
    with store.Store(db_path) as db:
        seed_tasks(db, pairwise=30)
    crash_after_labelling(db_path, 12)
    assert wal_of(db_path).exists()

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(db_path, alone)
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy2(db_path, both)
    shutil.copy2(wal_of(db_path), both)
    assert stored(alone / db_path.name)["rows"] == 0       # the 12 labels were only in the .wal
    assert stored(both / db_path.name)["rows"] == 12


def test_export_database_round_trip(tmp_path):
    source = tmp_path / "ws" / "prefstudio.duckdb"
    with store.Store(source) as db:
        tasks = seed_tasks(db, pairwise=20, ranking=5, required=2)
        store.add_user(db, "ann", "annotator", "ann-password")
        for _ in range(10):
            t = store.next_task(db, "ann")
            ids = store.get_task(db, t)["response_ids"]
            margin = "better" if len(ids) == 2 else None
            store.submit_label(db, "ann", t, [[i] for i in ids], margin_level=margin)
        store.skip_task(db, "ann", store.next_task(db, "ann"))
    export = tmp_path / "export"
    with duckdb.connect(str(source), read_only=True) as con:
        con.execute(f"EXPORT DATABASE '{export}' (FORMAT parquet)")
    restored = tmp_path / "restored.duckdb"
    with duckdb.connect(str(restored)) as con:
        con.execute(f"IMPORT DATABASE '{export}'")

    def dump(path: Path) -> dict:
        with store.Store(path, read_only=True) as db:
            names = [r["table_name"] for r in db.query(
                "SELECT table_name FROM information_schema.tables ORDER BY 1")]
            return {name: db.query(f"SELECT * FROM {name} ORDER BY ALL") for name in names}

    original = dump(source)
    assert len(original["labels"]) == 10 and len(original["tasks"]) == len(tasks)
    assert dump(restored) == original
    with store.Store(restored) as db:                       # and the studio can carry on with it
        assert store.verify_user(db, "ann", "ann-password") == "annotator"
        assert store.next_task(db, "ann") is not None
