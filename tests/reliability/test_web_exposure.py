"""What strangers and annotators must not reach: workspace files (exports, uploads, Gradio's
cache), the API schema on the login page, and Gradio's cancel / reset / heartbeat routes."""
import re

import pytest

from annotation_data import seed_tasks
import studio_server

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("exposure"), seed=lambda db: seed_tasks(db, pairwise=2))
    yield srv
    srv.close()


def test_annotators_cannot_fetch_exports_or_cached_uploads(server):
    admin = server.session("admin1")
    export = admin.post(server.url + "gradio_api/run/export_pairs", json={"data": ["both", None]})
    assert export.status_code == 200, export.text
    exported = export.json()["data"][0]["path"]
    uploaded = admin.post(server.url + "gradio_api/upload",
                          files={"files": ("secret.jsonl", b'{"secret": 1}')}).json()[0]
    assert str(server.workspace) in exported and str(server.workspace) in uploaded
    for path in (exported, uploaded):
        for route in ("gradio_api/file=", "gradio_api/file/"):
            assert admin.get(server.url + route + path).status_code == 200, (route, path)
            r = server.session("ann").get(server.url + route + path)
            assert r.status_code == 403, (route, path, r.status_code)
            assert r.json()["error"] == "only admins may download files of the workspace"
            assert server.session(None).get(server.url + route + path).status_code == 401
    # the same file named another way is still inside the workspace
    sneaky = str(server.workspace / "exports" / ".." / "tmp") + uploaded.split("tmp", 1)[1]
    assert server.session("ann").get(server.url + "gradio_api/file=" + sneaky).status_code == 403


def test_login_page_carries_no_api_schema(server):
    anon = server.session(None)
    for query in ("", "?all_endpoints=true"):
        page = anon.get(server.url + query).text
        assert "window.gradio_api_info = {};" in page
        assert "submit_label" not in page and "next_task" not in page
    logged_in = server.session("ann").get(server.url).text
    info = re.search(r"window\.gradio_api_info = (.*?);</script>", logged_in, re.S).group(1)
    assert "next_task" in info  # a logged-in user's page keeps it (the API docs use it)


def test_strangers_get_401_from_cancel_reset_and_heartbeat(server):
    anon = server.session(None)
    r = anon.post(server.url + "gradio_api/cancel", json={"session_hash": "x", "fn_index": 0,
                                                         "event_id": "x"})
    assert r.status_code == 401 and r.json()["error"] == "not logged in"
    assert anon.post(server.url + "gradio_api/reset", json={"event_id": "x"}).status_code == 401
    r = anon.get(server.url + "gradio_api/heartbeat/abc", stream=True, timeout=10)
    assert r.status_code == 401
    r.close()
    ann = server.session("ann")  # a logged-in user still reaches them
    assert ann.post(server.url + "gradio_api/reset", json={"event_id": "x"}).status_code == 200
    with ann.get(server.url + "gradio_api/heartbeat/abc", stream=True, timeout=10) as r:
        assert r.status_code == 200
