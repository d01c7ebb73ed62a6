"""Roles are checked in every handler, over raw HTTP too; strangers reach nothing."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from gradio_client.exceptions import AppError

from annotate.ui.jobs_tab import ALL_FIELDS

from annotate.ui.api import ENDPOINTS
from annotation_data import seed_tasks, snapshot
import studio_server

ROOT = Path(__file__).resolve().parent.parent

# plausible, harmful arguments for every admin event: if a role check were missing, these
# would create an admin, change a role, reset the overlap or read data
ADMIN_CALLS = {
    "users": [["add", "mallory", "admin", "mallory-password"], ["set_role", "ann", "admin", ""],
              ["list", "", "", ""]],
    "ui_add_user": [["mallory", "admin", "mallory-password"]],
    "ui_set_role": [["ann", "admin"]],
    "ui_set_password": [["admin1", "mallory-password"]],
    "ui_users_tab": [[]],
    "ui_agreement_note": [[True]],
    "set_overlap": [[5, None]],
    "import_file": [[None, "auto", 0, 1]],
    "export_pairs": [["both", None]],
    "browse": [["labels", "", "", "", "", None, None]],
    "agreement": [["human"]],
    "start_job": [["rm", {"max_steps": 1}], ["generate", {"model": "smollm2-135m-instruct"}]],
    "runs": [[]],
    "stop_job": [["train-rm-20260101-000000-abcdef"]],
    "resume_job": [["train-rm-20260101-000000-abcdef"]],
    "new_round": [["smollm2-135m-instruct", 2, 1, "all", ""]],
    "set_queue_order": [["diverse", "", None], ["default", "", 0]],
    "queue_order": [[]],
    "ui_queue_order_set": [["diverse", "", ""]],
    "ui_queue_order_view": [[]],
    "ui_start_job": [[None] * (2 + len(ALL_FIELDS))],   # kind, options and every form field
    "ui_stop_job": [[None]],
    "ui_resume_job": [[None]],
    "ui_run_detail": [[None]],
    "ui_jobs_tick": [[None, None]],
    "ui_job_form": [["rm", "fast"]],
    "models": [[]], "rounds": [[]], "ui_models_refresh": [[]],
    "mark_held_out": [["PROMPT", True]],
    "compare_policies": [[None, None]], "download_adapter": [[None]], "use_as_judge": [[None]],
    "next_round_from_policy": [[None, 4, "all"]], "ui_models_labels": [[None]],
    "ui_pick_prompt": [[""]],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("security"),
                              seed=lambda db: seed_tasks(db, pairwise=2, ranking=1))
    yield srv
    srv.close()


def test_every_event_is_classified(server):
    names = set(studio_server.endpoints(server.session("ann"), server.url))
    assert names == set(ENDPOINTS), "an event without a role in annotate.ui.api.ENDPOINTS"
    assert {n for n, role in ENDPOINTS.items() if role == "admin"} == set(ADMIN_CALLS)


@pytest.mark.parametrize("name", sorted(ADMIN_CALLS))
def test_admin_events_refuse_annotators_over_raw_http(server, name):
    session = server.session("ann")
    fn = studio_server.endpoints(session, server.url)[name]
    before = snapshot(server.db)
    for args in ADMIN_CALLS[name]:
        result = studio_server.raw_call(session, server.url, fn, args)
        assert result["error"] == "only admins may do this", (name, args, result)
    assert snapshot(server.db) == before


@pytest.mark.parametrize("name, args", [
    ("users", ("add", "mallory", "admin", "mallory-password")),
    ("set_overlap", (5, None)),
    ("browse", ("labels", "", "", "", "", None, None)),
    ("agreement", ("human",)),
    ("export_pairs", ("both", None)),
])
def test_admin_endpoints_refuse_annotators_through_gradio_client(server, name, args):
    before = snapshot(server.db)
    with pytest.raises(AppError, match="only admins"):
        server.client("eve").predict(*args, api_name=f"/{name}")
    assert snapshot(server.db) == before


def test_strangers_reach_no_event_and_no_data(server):
    logged_in = server.session("ann")
    fns = studio_server.endpoints(logged_in, server.url)
    anon = server.session(None)
    before = snapshot(server.db)
    for name, fn in fns.items():
        result = studio_server.raw_call(anon, server.url, fn, [])
        assert result["status"] == 401, (name, result)
    url = server.url
    for path in ["config", "gradio_api/info", "gradio_api/openapi.json", "gradio_api/queue/status",
                 f"gradio_api/file={server.db.path}", "gradio_api/upload_progress?upload_id=x"]:
        assert anon.get(url + path).status_code == 401, path
    for path in ["gradio_api/call/next_task", "gradio_api/run/next_task", "gradio_api/call/v2/next_task",
                 "gradio_api/api/next_task"]:
        r = anon.post(url + path, json={"data": []})
        assert r.status_code in (401, 404), (path, r.status_code)
        assert r.status_code == 401 or "detail" in r.json()
    r = anon.post(url + "gradio_api/upload", files={"files": ("x.jsonl", b"{}")})
    assert r.status_code == 401
    page = anon.get(url).text  # the login page, and nothing of the data
    assert "Question 0" not in page and "ann" not in re.sub(r"<[^>]+>", "", page).split()
    with pytest.raises(Exception):
        from gradio_client import Client
        Client(url, verbose=False)
    assert snapshot(server.db) == before


def test_database_and_uploads_are_not_served(server):
    session = server.session("admin1")  # not even to an admin
    for path in [server.db.path, server.workspace / "uploads" / "x.jsonl"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("{}")
        r = session.get(server.url + f"gradio_api/file={path}")
        assert r.status_code == 403, (path, r.status_code)


def test_wrong_password_is_refused(server):
    r = requests.post(server.url + "login", data={"username": "ann", "password": "wrong-password"})
    assert r.status_code == 400
    r = requests.post(server.url + "login", data={"username": "nobody", "password": "whatever1"})
    assert r.status_code == 400


def test_removed_role_takes_effect_on_the_next_call(server):
    """A role change ends that user's sessions; logged in again, the new role holds."""
    from annotate import store
    store.add_user(server.db, "temp-admin", "admin", "temp-admin-password")
    studio_server.PASSWORDS["temp-admin"] = "temp-admin-password"
    client = server.client("temp-admin")
    assert client.predict("list", "", "", "", api_name="/users")
    session = server.session("temp-admin")
    assert session.post(server.url + "api/users", json={}).status_code == 200
    store.set_role(server.db, "temp-admin", "annotator")
    with pytest.raises(Exception, match="401"):
        client.predict("list", "", "", "", api_name="/users")
    assert session.post(server.url + "api/users", json={}).status_code == 401
    with pytest.raises(AppError, match="only admins"):
        server.client("temp-admin").predict("list", "", "", "", api_name="/users")


def test_first_start_creates_admin_and_prints_password_once(tmp_path):
    workspace = tmp_path / "ws"
    env = {**os.environ, "PREFSTUDIO_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"}
    port = studio_server.free_port()
    cmd = [sys.executable, str(ROOT / "app.py"), "serve", "--port", str(port)]

    def run_until_up():
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                return proc, "".join(lines)
        raise AssertionError("server did not start:\n" + "".join(lines))

    proc, out = run_until_up()
    try:
        match = re.search(r"one-time password: (\S+)", out)
        assert match, out
        # the hint names what works while the server runs (the CLI would find the store busy)
        assert "Users tab" in out and "users passwd" not in out
        r = requests.post(f"http://127.0.0.1:{port}/login",
                          data={"username": "admin", "password": match.group(1)})
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc, out = run_until_up()
    try:
        assert "one-time password" not in out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("name", sorted(ADMIN_CALLS))
def test_admin_events_refuse_annotators_on_the_direct_run_route(server, name):
    """POST /gradio_api/run/<name> skips the queue: the handler's own check still refuses."""
    session = server.session("ann")
    before = snapshot(server.db)
    for args in ADMIN_CALLS[name]:
        r = session.post(server.url + f"gradio_api/run/{name}", json={"data": args})
        body = r.json()
        assert r.status_code != 200 and "only admins" in json.dumps(body), (name, r.status_code, body)
    assert snapshot(server.db) == before
