"""Hostile and broken payloads for the JSON API (``POST /api/<name>``), one real server.

Each payload gets a 4xx whose message names the problem, leaves the store as it was, and the
server answers the next call.
"""
import json

import pytest

from annotation_data import seed_tasks, snapshot
import studio_server

pytestmark = pytest.mark.reliability
JSON = "application/json"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("payloads"), seed=lambda db: seed_tasks(db, pairwise=3))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def task(server):
    """The pairwise task handed to ann (claimed before any payload is sent)."""
    t = server.session("ann").post(server.url + "api/next_task", json={}).json()
    return {"id": t["id"], "a": t["responses"][0]["id"], "b": t["responses"][1]["id"]}


def label(t, **changes):
    body = {"task_id": t["id"], "ranking": [[t["a"]], [t["b"]]], "margin": "better"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()
DEEP = b"[" * 100_000 + b"]" * 100_000
# (case id, user, endpoint, body: dict | bytes | fn(task) -> either, content type, status, message)
CASES = [
    # the body itself
    ("not json", "ann", "next_task", b"[[", JSON, 400, "body is not JSON"),
    ("cut off object", "ann", "next_task", b'{"limit": 1', JSON, 400, "body is not JSON"),
    ("invalid utf-8", "ann", "next_task", b'{"x": "\xff"}', JSON, 400, "body is not JSON"),
    ("binary", "ann", "next_task", bytes(range(256)), JSON, 400, "body is not JSON"),
    ("array body", "ann", "next_task", b"[1, 2]", JSON, 400, "body must be a JSON object"),
    ("string body", "ann", "next_task", b'"next"', JSON, 400, "body must be a JSON object"),
    ("null body", "ann", "next_task", b"null", JSON, 400, "body must be a JSON object"),
    ("number body", "ann", "next_task", b"42", JSON, 400, "body must be a JSON object"),
    ("100k deep array", "ann", "submit_label", DEEP, JSON, 400, "body nests deeper than 32 levels"),
    ("40 deep argument", "ann", "next_task", b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}", JSON, 400,
     "body nests deeper than 32 levels"),
    ("deep objects", "ann", "next_task", b'{"a":' * 5000 + b"1" + b"}" * 5000, JSON, 400,
     "body nests deeper than 32 levels"),
    ("2 MiB body", "ann", "submit_label", b"x" * (2 << 20), JSON, 413, "request body too large"),
    ("text/plain", "ann", "next_task", b"{}", "text/plain", 415, "application/json"),
    ("form encoded", "ann", "next_task", b"a=1", "application/x-www-form-urlencoded", 415,
     "application/json"),
    ("multipart", "ann", "next_task", b"--x--", "multipart/form-data; boundary=x", 415, "application/json"),
    ("no content type", "ann", "next_task", b"{}", "", 415, "application/json"),
    # names and arguments
    ("unknown endpoint", "ann", "drop_tables", {}, JSON, 404, "no endpoint 'drop_tables'"),
    ("private ui event", "ann", "ui_submit", {}, JSON, 404, "no endpoint 'ui_submit'"),
    ("unknown argument", "ann", "next_task", {"everything": 1}, JSON, 400, "unknown argument(s) everything"),
    ("missing task id", "ann", "submit_label", {"ranking": [["a"], ["b"]]}, JSON, 400,
     "missing argument(s) task_id"),
    ("task id a number", "ann", "skip_task", {"task_id": 7}, JSON, 400, "task_id must be a JSON string"),
    ("task id null", "ann", "skip_task", {"task_id": None}, JSON, 400, "task_id must be a JSON string"),
    ("task id a list", "ann", "skip_task", {"task_id": ["t1"]}, JSON, 400, "task_id must be a JSON string"),
    ("limit a string", "ann", "my_labels", {"limit": "5"}, JSON, 400, "limit must be a JSON integer"),
    ("limit a float", "ann", "my_labels", {"limit": 5.5}, JSON, 400, "limit must be a JSON integer"),
    ("limit a boolean", "ann", "my_labels", {"limit": True}, JSON, 400, "limit must be a JSON integer"),
    ("limit NaN", "ann", "my_labels", b'{"limit": NaN}', JSON, 400, "limit must be a JSON integer, not NaN"),
    ("rationale a number", "ann", "submit_label", lambda t: label(t, rationale=5), JSON, 400,
     "rationale must be a JSON string"),
    # labels
    ("unknown task", "ann", "submit_label", lambda t: label(t, task_id="t-nope"), JSON, 400,
     "unknown task id 't-nope'"),
    ("lone surrogate task id", "ann", "submit_label", lambda t: label(t, task_id="\ud800"), JSON, 400,
     "unknown task id"),
    ("NUL in task id", "ann", "skip_task", {"task_id": "a\u0000b"}, JSON, 400, "unknown task id"),
    ("empty margin", "ann", "submit_label", lambda t: label(t, margin=""), JSON, 400,
     "a pairwise label needs a margin"),
    ("no margin", "ann", "submit_label", lambda t: label(t, margin=DROP), JSON, 400,
     "a pairwise label needs a margin"),
    ("unknown margin", "ann", "submit_label", lambda t: label(t, margin="enormously"), JSON, 400,
     "margin must be one of"),
    ("margin a number", "ann", "submit_label", lambda t: label(t, margin=3), JSON, 400,
     "margin must be a JSON string"),
    ("ranking a dict", "ann", "submit_label", lambda t: label(t, ranking={"a": 1}), JSON, 400,
     "ranking must be a JSON list of tie groups"),
    ("ranking not json text", "ann", "submit_label", lambda t: label(t, ranking="[["), JSON, 400,
     "ranking is not valid JSON"),
    ("empty ranking", "ann", "submit_label", lambda t: label(t, ranking=[]), JSON, 400,
     "ranking must be a non-empty list"),
    ("response left out", "ann", "submit_label", lambda t: label(t, ranking=[[t["a"]]]), JSON, 400,
     "the ranking leaves out response"),
    ("response twice", "ann", "submit_label", lambda t: label(t, ranking=[[t["a"]], [t["a"]]]),
     JSON, 400, "appears twice in the ranking"),
    ("foreign response", "ann", "submit_label", lambda t: label(t, ranking=[["zz"], [t["a"]]]),
     JSON, 400, "response 'zz' is not part of this task"),
    ("numbers as ids", "ann", "submit_label", lambda t: label(t, ranking=[[1], [2]]), JSON, 400,
     "not a response id string"),
    ("ranking nested deeper", "ann", "submit_label", lambda t: label(t, ranking=[[[t["a"]]], [t["b"]]]),
     JSON, 400, "not a response id string"),
    ("null tie groups", "ann", "submit_label", lambda t: label(t, ranking=[None, None]), JSON, 400,
     "must be a non-empty list of response ids"),
    ("unknown label to undo", "ann", "undo_label", {"label_id": "nope"}, JSON, 400, "unknown label id"),
    ("unknown task to skip", "ann", "skip_task", {"task_id": "t-other"}, JSON, 400, "unknown task id"),
    # users and roles
    ("annotator adds an admin", "ann", "users",
     {"action": "add", "name": "mallory", "role": "admin", "password": "mallory-password"}, JSON, 400,
     "only admins may do this"),
    ("unknown action", "admin1", "users", {"action": "drop"}, JSON, 400, "action must be list, add"),
    ("name with a space", "admin1", "users",
     {"action": "add", "name": "a b", "role": "annotator", "password": "12345678"}, JSON, 400,
     "user names are 1-64 letters"),
    ("name too long", "admin1", "users",
     {"action": "add", "name": "x" * 65, "role": "annotator", "password": "12345678"}, JSON, 400,
     "user names are 1-64 letters"),
    ("unknown role", "admin1", "users",
     {"action": "add", "name": "newbie", "role": "root", "password": "12345678"}, JSON, 400,
     "role must be admin or annotator"),
    ("short password", "admin1", "users",
     {"action": "add", "name": "newbie", "role": "annotator", "password": "short"}, JSON, 400,
     "passwords need at least 8 characters"),
    ("existing user", "admin1", "users",
     {"action": "add", "name": "ann", "role": "annotator", "password": "12345678"}, JSON, 400,
     "user 'ann' already exists"),
    ("role of a ghost", "admin1", "users", {"action": "set_role", "name": "ghost", "role": "admin"},
     JSON, 400, "unknown user 'ghost'"),
    ("last admin demoted", "admin1", "users", {"action": "set_role", "name": "admin1", "role": "annotator"},
     JSON, 400, "refusing to remove the last admin"),
    ("password of a ghost", "admin1", "users",
     {"action": "set_password", "name": "ghost", "password": "12345678"}, JSON, 400, "unknown user 'ghost'"),
    ("empty password", "admin1", "users", {"action": "set_password", "name": "ann", "password": ""},
     JSON, 400, "passwords need at least 8 characters"),
    # who is asking
    ("stranger", None, "next_task", {}, JSON, 401, "not logged in"),
    ("stranger adds an admin", None, "users",
     {"action": "add", "name": "mallory", "role": "admin", "password": "mallory-password"}, JSON, 401,
     "not logged in"),
]


@pytest.mark.parametrize("case, user, endpoint, body, ctype, status, message", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_payload_is_refused_by_name(server, task, case, user, endpoint, body, ctype, status,
                                        message):
    session = server.session(user)
    if callable(body):
        body = body(task)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = snapshot(server.db)
    r = session.post(server.url + f"api/{endpoint}", data=data, headers={"Content-Type": ctype})
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert message in r.json()["error"], r.json()
    assert snapshot(server.db) == before
    assert server.session("bob").post(server.url + "api/progress", json={}).status_code == 200


def test_chunked_body_is_cut_off_at_the_limit(server):
    """No Content-Length to refuse up front: reading stops once 1 MiB has arrived."""
    before = snapshot(server.db)
    chunks = (b"[" * 65536 for _ in range(64))  # 4 MiB offered, chunked
    r = server.session("ann").post(server.url + "api/submit_label", data=chunks,
                                   headers={"Content-Type": JSON})
    assert r.status_code == 413 and "request body too large" in r.json()["error"]
    assert snapshot(server.db) == before


def test_at_least_forty_payloads():
    assert len(CASES) >= 40
