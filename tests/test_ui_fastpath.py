"""The Guard's fast paths (rest.FastPaths): ``POST /api/<name>`` and Gradio's run route of the
scriptable API's endpoints, answered without Gradio's middleware and router. The answers must
be the ones Gradio's own route gives, and every check must still hold (real server, real
DuckDB file, real HTTP)."""
import json

import pytest

from annotate import store
from annotation_data import snapshot
import studio_server


server = studio_server.module_server("fast", pairwise=4, ranking=1, k=3)


def run(session, server, name, data, session_hash, gradio=False, **headers):
    """POST /gradio_api/run/<name>; ``gradio``: a body with a key the fast path does not take
    (Gradio ignores it), so that Gradio's own route answers."""
    body = {"data": data, "session_hash": session_hash, **({"x_gradio": 1} if gradio else {})}
    r = session.post(server.url + f"gradio_api/run/{name}", json=body, headers=headers)
    return r.status_code, r.json()


def answered_by_gradio(server, session_hash) -> bool:
    """Gradio's route makes a session state for every session hash it serves; the fast path
    makes none (that copy of every block's config is much of what it saves)."""
    return session_hash in server.demo.state_holder


def test_run_route_answers_as_gradio_does(server):
    ann = server.session("ann")
    fast = run(ann, server, "progress", [], "probe-fast")
    slow = run(ann, server, "progress", [], "probe-gradio", gradio=True)
    assert not answered_by_gradio(server, "probe-fast") and answered_by_gradio(server, "probe-gradio")
    assert fast[0] == slow[0] == 200
    assert set(fast[1]) == set(slow[1]) and fast[1]["data"] == slow[1]["data"]
    assert fast[1]["is_generating"] is False and fast[1]["changed_state_ids"] == []
    # a refusal: the same status and error payload
    fast = run(ann, server, "users", ["list", "", "", ""], "probe-fast-2")
    slow = run(ann, server, "users", ["list", "", "", ""], "probe-gradio-2", gradio=True)
    assert answered_by_gradio(server, "probe-gradio-2") and not answered_by_gradio(server, "probe-fast-2")
    assert fast == slow and fast[0] == 500 and "only admins" in fast[1]["error"]


def test_label_through_the_fast_run_route_is_committed(server):
    bob = server.session("bob")
    status, out = run(bob, server, "next_task", [], "bob-1")
    task = out["data"][0]
    ids = [r["id"] for r in task["responses"]]
    ranking = [[i] for i in ids]
    margin = "better" if task["kind"] == "pairwise" else ""
    status, out = run(bob, server, "submit_label", [task["id"], json.dumps(ranking), margin, ""], "bob-1")
    assert status == 200 and not answered_by_gradio(server, "bob-1")
    label = out["data"][0]
    row = store.current_label(server.db, task["id"], "bob")
    assert row["id"] == label["label_id"] and [list(g) for g in row["ranking"]] == ranking


@pytest.mark.parametrize("body", [
    {"data": ["only-one-argument"]},                 # fewer values than arguments
    {"data": [["not", "a", "string"], "[]", "", ""]},  # a value of the wrong type
    {"data": [], "fn_index": 3},                     # Gradio's own addressing
])
def test_other_calls_go_to_gradio_and_change_nothing(server, body):
    """A body the fast path does not take is Gradio's to answer, as before: an error, and
    the store as it was."""
    ann = server.session("ann")
    before = snapshot(server.db)
    r = ann.post(server.url + "gradio_api/run/submit_label", json={**body, "session_hash": "odd"})
    assert r.status_code != 200
    assert snapshot(server.db) == before


def test_checks_before_the_fast_paths(server):
    """Strangers and other web pages are refused by the Guard before any fast path."""
    stranger = server.session(None)
    for path in ("api/next_task", "gradio_api/run/next_task"):
        r = stranger.post(server.url + path, json={"data": []} if "run" in path else {})
        assert r.status_code == 401, path
    ann = server.session("ann")
    before = snapshot(server.db)
    for path in ("api/next_task", "gradio_api/run/next_task"):
        r = ann.post(server.url + path, json={"data": []} if "run" in path else {},
                     headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], path
    assert snapshot(server.db) == before
    # the JSON route still answers its own errors (404 for a name that is no endpoint)
    r = ann.post(server.url + "api/drop_tables", json={})
    assert r.status_code == 404 and "no endpoint" in r.json()["error"]
