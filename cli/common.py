"""What every command shares: the workspace, opening the store, printing results, errors.

The workspace is the folder of the database, whichever way it was named (``--db FILE``,
``$PREFSTUDIO_DB``, or ``$PREFSTUDIO_WORKSPACE``/``./workspace`` + ``prefstudio.duckdb``):
runs/, exports/, uploads/ and tmp/ go beside the database, so two databases never share runs.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PROJECT = ROOT / "data" / "sample"
DB_FILE = "prefstudio.duckdb"


class CliError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``prefstudio CMD: message``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


# --- the workspace --------------------------------------------------------------------------

def default_db() -> Path:
    """The database when no --db is given."""
    if os.environ.get("PREFSTUDIO_DB"):
        return Path(os.environ["PREFSTUDIO_DB"]).resolve()
    return Path(os.environ.get("PREFSTUDIO_WORKSPACE", "workspace")).resolve() / DB_FILE


def db_path(db: str | Path | None) -> Path:
    return Path(db).resolve() if db else default_db()


def workspace(db: str | Path | None) -> Path:
    """The folder of the database: runs/, exports/, uploads/ and tmp/ live there."""
    return db_path(db).parent


def is_default_workspace(db: str | Path | None) -> bool:
    """No database was named: neither --db nor $PREFSTUDIO_DB."""
    return not db and not os.environ.get("PREFSTUDIO_DB")


def open_store(db: str | Path | None, *, read_only: bool = False):
    """Open the database; a new one starts empty (only `serve` adds the sample project)."""
    from annotate import store

    path = db_path(db)
    if read_only and not path.exists():
        raise CliError(f"{path}: no such database")
    return store.Store(path, read_only=read_only)


def resolve_run(value: str | None, db: str | Path | None) -> str | None:
    """A run id, as the studio lists it, becomes its run folder; anything else (a folder, a
    model spec, an ensemble file) is returned unchanged."""
    if not value or Path(value).exists() or os.sep in value:
        return value
    folder = workspace(db) / "runs" / value
    if (folder / "run.json").exists():
        return str(folder)
    path = db_path(db)
    if not path.exists():
        return value
    from annotate import store
    try:
        with store.Store(path, read_only=True) as s:
            rows = s.query("SELECT artifact_dir FROM runs WHERE id = ?", [value])
    except (store.StoreError, store.StoreBusy):  # held by a server: only runs/ can tell
        return value
    if rows and rows[0]["artifact_dir"] and Path(rows[0]["artifact_dir"]).exists():
        return rows[0]["artifact_dir"]
    return value


# --- output ---------------------------------------------------------------------------------

def emit(args, result: dict, text: str | None = None) -> None:
    """Print a result as one JSON line (``--json``) or as text for people."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        print(text)


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"  # set by torchrun / accelerate launch


def add_common_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--db", help="database file (default: $PREFSTUDIO_DB or "
                                 "./workspace/prefstudio.duckdb); its folder is the workspace")
    sp.add_argument("--json", action="store_true", help="print the result as one JSON line")
