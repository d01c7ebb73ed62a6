"""POST /api/<name>: the scriptable API as plain JSON, against a real server and DuckDB file."""
import pytest

from annotate import store
from annotation_data import seed_tasks, snapshot
import studio_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("rest"),
                              seed=lambda db: seed_tasks(db, pairwise=3, ranking=1, k=4))
    yield srv
    srv.close()


def api(session, server, endpoint, **kwargs):
    r = session.post(server.url + f"api/{endpoint}", json=kwargs)
    return r.status_code, r.json()


def test_label_edit_and_progress_over_json(server):
    ann = server.session("bob")
    status, task = api(ann, server, "next_task")
    assert status == 200 and set(task) >= {"id", "kind", "prompt", "responses"}
    ids = [r["id"] for r in task["responses"]]
    assert ids == store.shown_order(task["id"], "bob", store.get_task(server.db, task["id"])["response_ids"])
    margin = "better" if task["kind"] == "pairwise" else ""
    status, first = api(ann, server, "submit_label", task_id=task["id"], ranking=[[i] for i in ids],
                        margin=margin)  # a ranking as a JSON list, not a string
    assert status == 200 and first["superseded"] is None
    row = store.current_label(server.db, task["id"], "bob")
    assert row["id"] == first["label_id"] and [list(g) for g in row["ranking"]] == [[i] for i in ids]
    status, second = api(ann, server, "submit_label", task_id=task["id"],
                         ranking=[[i] for i in ids[::-1]], margin=margin, rationale="on reflection")
    assert status == 200 and second["superseded"] == first["label_id"]
    assert api(ann, server, "progress") == (200, {"done_today": 1, "done_total": 1, "left": 3})
    status, mine = api(ann, server, "my_labels", limit=5)
    assert [r["label_id"] for r in mine] == [second["label_id"]]


@pytest.mark.parametrize("name, kwargs, code, message", [
    ("submit_label", {"task_id": "t-nope", "ranking": [["a"], ["b"]]}, 400, "unknown task id"),
    ("submit_label", {"ranking": [["a"], ["b"]]}, 400, "missing argument(s) task_id"),
    ("next_task", {"everything": 1}, 400, "unknown argument(s) everything"),
    ("users", {"action": "add", "name": "mallory", "role": "admin", "password": "mallory-pass"},
     400, "only admins may do this"),
    ("users", {}, 400, "only admins may do this"),
    ("drop_tables", {}, 404, "no endpoint 'drop_tables'"),
    ("my_labels", {"limit": "5"}, 400, "limit must be a JSON integer, not \"5\""),
    ("skip_task", {"task_id": ["t1"]}, 400, "task_id must be a JSON string"),
    ("submit_label", {"task_id": "t1", "ranking": {"a": 1}}, 400, "ranking must be a JSON list of tie groups"),
])
def test_refusals_change_nothing(server, name, kwargs, code, message):
    ann = server.session("ann")
    before = snapshot(server.db)
    status, out = api(ann, server, name, **kwargs)
    assert status == code and message in out["error"], out
    assert snapshot(server.db) == before


def test_malformed_bodies_and_strangers_are_refused(server):
    before = snapshot(server.db)
    ann = server.session("ann")
    for body in (b"[[", b"[1, 2]", b"\xff\xfe"):
        r = ann.post(server.url + "api/next_task", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"].startswith("body "), r.text
    r = ann.post(server.url + "api/submit_label", data=b"x" * (2 << 20),
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = ann.post(server.url + "api/next_task", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415  # what a cross-site form could send: refused
    anon = server.session(None)
    for name in ("next_task", "submit_label", "users", "progress"):
        r = anon.post(server.url + f"api/{name}", json={})
        assert r.status_code == 401 and "not logged in" in r.json()["error"]
    assert anon.get(server.url + "api/next_task").status_code == 401  # strangers: nothing
    assert ann.get(server.url + "api/next_task").status_code == 405  # POST only
    assert snapshot(server.db) == before


def test_admin_lists_users_over_json(server):
    status, rows = api(server.session("admin1"), server, "users")
    assert status == 200 and {"admin1", "ann", "bob"} <= {r["name"] for r in rows}
