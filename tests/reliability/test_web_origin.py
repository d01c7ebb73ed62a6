"""Cross-origin forgery over real HTTP: every acting request from another origin is refused.

A browser names the page that sends a request (Origin, else Referer); these tests send what
a page on another port of the same host would, with the victim's session cookie, to every
kind of route that acts — the JSON API, Gradio's queue, run, call and upload routes, login,
logout, cancel and reset — and check the 403, the store unchanged, and no CORS grant.
"""
import pytest

from annotation_data import seed_tasks, snapshot
import studio_server

pytestmark = pytest.mark.reliability
ALLOWED = "https://studio.example.org"
ADD_MALLORY = {"action": "add", "name": "mallory", "role": "admin", "password": "mallory-password"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("origin"), seed=lambda db: seed_tasks(db, pairwise=2),
                              allow_origins=[ALLOWED])
    yield srv
    srv.close()


def own(server) -> str:
    return server.url.rstrip("/")


def foreign(server) -> str:
    """Another port of the same host: what the issue's attacker page used."""
    port = int(own(server).rsplit(":", 1)[1])
    return f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"


def acting_requests(server, session):
    """(name, callable(headers) -> response) for every kind of route that acts."""
    url = server.url
    fns = studio_server.endpoints(session, url)
    join = {"data": [], "fn_index": fns["next_task"], "session_hash": "forged0001",
            "event_data": None, "trigger_id": None}
    return [
        ("api/users", lambda h: session.post(url + "api/users", json=ADD_MALLORY, headers=h)),
        ("api/next_task", lambda h: session.post(url + "api/next_task", json={}, headers=h)),
        ("queue/join", lambda h: session.post(url + "gradio_api/queue/join", json=join, headers=h)),
        ("run/users", lambda h: session.post(url + "gradio_api/run/users", headers=h,
                                             json={"data": list(ADD_MALLORY.values())})),
        ("call/users", lambda h: session.post(url + "gradio_api/call/users", headers=h,
                                              json={"data": list(ADD_MALLORY.values())})),
        ("upload", lambda h: session.post(url + "gradio_api/upload", headers=h,
                                          files={"files": ("x.jsonl", b"{}")})),
        ("login", lambda h: session.post(url + "login", headers=h,
                                         data={"username": "ann", "password": "ann-password"})),
        ("cancel", lambda h: session.post(url + "gradio_api/cancel", headers=h,
                                          json={"session_hash": "x", "fn_index": 0, "event_id": "x"})),
        ("reset", lambda h: session.post(url + "gradio_api/reset", headers=h, json={"event_id": "x"})),
        ("logout", lambda h: session.get(url + "logout", headers=h, allow_redirects=False)),
    ]


@pytest.mark.parametrize("how", ["origin", "referer", "null origin"])
def test_acting_requests_from_another_origin_are_refused(server, how):
    admin = server.session("admin1")
    before = snapshot(server.db)
    uploads_before = sorted((server.workspace / "tmp").rglob("*"))
    headers = {"origin": {"Origin": foreign(server)}, "referer": {"Referer": foreign(server) + "/attack.html"},
               "null origin": {"Origin": "null"}}[how]
    for name, call in acting_requests(server, admin):
        r = call(headers)
        assert r.status_code == 403, (name, r.status_code, r.text[:200])
        assert "cross-origin request refused" in r.json()["error"], name
        assert not any(k.lower().startswith("access-control-") for k in r.headers), name
    assert snapshot(server.db) == before
    assert sorted((server.workspace / "tmp").rglob("*")) == uploads_before
    assert admin.post(server.url + "api/progress", json={}).status_code == 200  # still logged in


def test_the_same_calls_from_the_studio_itself_or_a_script_work(server):
    for headers in ({"Origin": own(server)}, {"Referer": own(server) + "/?view=annotate"}, {}):
        admin = server.session("admin1")
        r = admin.post(server.url + "api/users", json={"action": "list"}, headers=headers)
        assert r.status_code == 200 and "admin1" in r.text, headers
        r = admin.post(server.url + "gradio_api/upload", files={"files": ("x.jsonl", b"{}")},
                       headers=headers)
        assert r.status_code == 200, (headers, r.text)
        r = admin.get(server.url + "logout", headers=headers, allow_redirects=False)
        assert r.status_code == 302, headers
        assert admin.post(server.url + "api/users", json={}).status_code == 401  # logged out


def test_no_cors_grant_to_another_origin(server):
    admin = server.session("admin1")
    for origin in (foreign(server), "http://localhost:9", "null"):
        pre = admin.options(server.url + "api/users", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers, origin
        # a read (GET) passes the origin check, but the browser gets no leave to show it
        r = admin.get(server.url + "config", headers={"Origin": origin})
        assert r.status_code == 200
        assert not any(k.lower().startswith("access-control-") for k in r.headers), origin


def test_an_allowed_origin_may_act_and_gets_cors(server):
    admin = server.session("admin1")
    pre = admin.options(server.url + "api/users", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ALLOWED
    assert pre.headers["access-control-allow-credentials"] == "true"
    r = admin.post(server.url + "api/users", json={"action": "list"}, headers={"Origin": ALLOWED})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    # the same host on another scheme or port is another origin
    for near in ("http://studio.example.org", "https://studio.example.org:8443"):
        r = admin.post(server.url + "api/users", json={"action": "list"}, headers={"Origin": near})
        assert r.status_code == 403, near


def test_a_bad_allow_origin_stops_serve(tmp_path):
    from annotate.ui import serve
    with pytest.raises(ValueError, match="--allow-origin needs a URL"):
        serve(tmp_path / "x.duckdb", "127.0.0.1", studio_server.free_port(), tmp_path,
              block=False, allow_origins=["studio.example.org"])
    assert not (tmp_path / "x.duckdb").exists()
