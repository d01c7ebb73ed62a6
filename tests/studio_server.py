"""A real studio server for the UI tests: Gradio on 127.0.0.1, a DuckDB file in tmp_path.

The server runs in a thread of the test process, so the test reads the very database the
server writes (one owning process, as in production). Raw-HTTP helpers speak Gradio's queue
protocol directly, to reach even the handlers ``gradio_client`` refuses to call.
"""
from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from annotate import store

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"admin1": "admin-password", "ann": "ann-password", "bob": "bob-password",
             "cid": "cid-password", "eve": "eve-password"}
ROLES = {"admin1": "admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    db: store.Store
    demo: object
    workspace: Path
    studio: object = None

    def client(self, user: str):
        from gradio_client import Client
        return Client(self.url, auth=(user, PASSWORDS[user]), verbose=False)

    def session(self, user: str | None) -> requests.Session:
        """A logged-in requests session (or an anonymous one for ``None``)."""
        s = requests.Session()
        if user is not None:
            r = s.post(self.url + "login", data={"username": user, "password": PASSWORDS[user]})
            assert r.status_code == 200, r.text
        return s

    def close(self) -> None:
        self.studio.jobs.close()
        self.demo.close()
        self.db.close()


def start(tmp_path: Path, seed=None, users=PASSWORDS, **serve_options) -> Server:
    """Create the workspace database (users, optional ``seed(db)``), then serve it
    (``serve_options``: e.g. allow_origins, session_hours)."""
    from annotate.ui import serve

    workspace = tmp_path / "workspace"
    db_path = workspace / "prefstudio.duckdb"
    with store.Store(db_path) as db:
        for name in users:
            store.add_user(db, name, ROLES.get(name, "annotator"), PASSWORDS[name])
        if seed is not None:
            seed(db)
    port = free_port()
    from cli import parse_command
    serve_options.setdefault("parse_command", parse_command)
    demo, db, studio = serve(db_path, "127.0.0.1", port, workspace, block=False,
                              **serve_options)
    return Server(f"http://127.0.0.1:{port}/", db, demo, workspace, studio)


def module_server(name: str, **tasks):
    """A module-scoped pytest fixture: a server on a fresh workspace seeded with ``tasks``
    (``annotation_data.seed_tasks`` options)."""
    import pytest
    from annotation_data import seed_tasks

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        srv = start(tmp_path_factory.mktemp(name), seed=lambda db: seed_tasks(db, **tasks))
        yield srv
        srv.close()
    return server


def endpoints(session: requests.Session, url: str) -> dict[str, int]:
    """api_name → fn index, from the app config (needs a logged-in session)."""
    cfg = session.get(url + "config").json()
    return {d["api_name"]: d["id"] for d in cfg["dependencies"] if d.get("api_name")}


def raw_call(session: requests.Session, url: str, fn_index: int, data: list) -> dict:
    """Call any event handler the way the browser does: join the queue, read the stream.

    Returns {"status": HTTP status of the join, "error": message or None, "output": data,
    "notes": [the texts of the toasts it showed (gr.Warning / gr.Info)]}.
    """
    session_hash = uuid.uuid4().hex[:10]
    r = session.post(url + "gradio_api/queue/join",
                     json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                           "event_data": None, "trigger_id": None})
    if r.status_code != 200:
        return {"status": r.status_code, "error": r.text, "output": None}
    notes = []
    with session.get(url + "gradio_api/queue/data", params={"session_hash": session_hash},
                     stream=True, timeout=60) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "log":
                notes.append(msg.get("log") or "")
            if msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                if not msg.get("success", True) or out.get("error"):
                    return {"status": 200, "error": out.get("error") or "error", "output": None,
                            "notes": notes}
                return {"status": 200, "error": None, "output": out.get("data"), "notes": notes}
    return {"status": 200, "error": "stream ended without a result", "output": None}
