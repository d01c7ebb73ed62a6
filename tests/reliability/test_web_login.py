"""Logins and sessions against a real server: the rate limit per name and per address, equal
work for unknown names, sessions that expire, and sessions that end on a password or role
change (Users tab, JSON API); `prefstudio users passwd` still works on a stopped studio."""
import hashlib
import subprocess
import sys

import pytest
import requests

from annotate import store
from annotation_data import seed_tasks, snapshot
import studio_server

pytestmark = pytest.mark.reliability


@pytest.fixture
def server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=1))
    yield srv
    srv.close()


def app_of(server):
    return server.demo.server_app


def login(server, name, password):
    return requests.post(server.url + "login", data={"username": name, "password": password})


def later(clock, seconds):
    """A clock ``seconds`` ahead of ``clock`` (instead of waiting)."""
    return lambda: clock() + seconds


def test_ten_wrong_passwords_lock_the_name_even_for_the_right_one(server):
    limiter = app_of(server).state.login_limiter
    for _ in range(10):
        assert login(server, "bob", "wrong-password").status_code == 400
    r = login(server, "bob", "bob-password")
    assert r.status_code == 429
    wait = int(r.json()["detail"].split("try again in ")[1].split(" s")[0])
    assert r.json()["detail"] == f"too many failed logins; try again in {wait} s"
    assert 0 < wait <= limiter.lockout
    assert login(server, "cid", "cid-password").status_code == 200  # other names are not locked
    real = limiter.clock
    limiter.clock = later(real, limiter.lockout + 1)
    try:
        assert login(server, "bob", "bob-password").status_code == 200
    finally:
        limiter.clock = real


def test_one_address_trying_many_names_is_locked(server):
    limiter = app_of(server).state.login_limiter
    for i in range(limiter.limits["address"]):
        assert login(server, f"guess{i}", "wrong-password").status_code == 400
    r = login(server, "cid", "cid-password")  # a right password, from the same address
    assert r.status_code == 429 and r.json()["detail"].startswith("too many failed logins")
    assert app_of(server).tokens.get("anything") is None and len(app_of(server).tokens) == 0


def test_failures_age_out_of_the_window(server):
    limiter = app_of(server).state.login_limiter
    real = limiter.clock
    try:
        for step in range(12):  # 12 failures, but never 10 within one window
            limiter.clock = later(real, step * limiter.window / 8)
            assert login(server, "bob", "wrong-password").status_code == 400, step
    finally:
        limiter.clock = real


def test_unknown_names_cost_one_scrypt_like_known_ones(server, monkeypatch):
    """Equal work, counted (not timed): one scrypt for a known name and for an unknown one."""
    calls = []
    real_scrypt = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real_scrypt(*a, **k))
    store.verify_user(server.db, "nobody-at-all", "whatever")  # (makes the dummy hash once)
    for name, password in [("ann", "wrong-password"), ("nobody-at-all", "wrong-password"),
                           ("ann", "ann-password")]:
        calls.clear()
        store.verify_user(server.db, name, password)
        assert len(calls) == 1, name
    assert login(server, "nobody-at-all", "whatever").json()["detail"] == \
        login(server, "ann", "whatever").json()["detail"] == "Incorrect credentials."


def test_sessions_expire(tmp_path):
    srv = studio_server.start(tmp_path, session_hours=0.5)
    try:
        sessions = app_of(srv).tokens
        ann, bob = srv.session("ann"), srv.session("bob")
        real = sessions.clock
        sessions.clock = later(real, 0.4 * 3600)
        assert ann.post(srv.url + "api/progress", json={}).status_code == 200
        sessions.clock = later(real, 0.5 * 3600 + 1)
        r = ann.post(srv.url + "api/progress", json={})
        assert r.status_code == 401
        assert ann.get(srv.url + "config").status_code == 401
        # logging out among ended sessions (Gradio looks each one up) still works
        assert bob.get(srv.url + "logout", allow_redirects=False).status_code == 302
        sessions.clock = real
        assert ann.post(srv.url + "api/progress", json={}).status_code == 401  # gone for good
        assert len(sessions) == 0
    finally:
        srv.close()


def test_a_password_change_ends_that_users_sessions(server):
    bob_1, bob_2, cid = server.session("bob"), server.session("bob"), server.session("cid")
    admin = server.session("admin1")
    r = admin.post(server.url + "api/users", json={"action": "set_password", "name": "bob",
                                                   "password": "bob-new-password"})
    assert r.status_code == 200
    for s in (bob_1, bob_2):
        assert s.post(server.url + "api/progress", json={}).status_code == 401
    assert cid.post(server.url + "api/progress", json={}).status_code == 200  # others stay
    assert login(server, "bob", "bob-password").status_code == 400
    assert login(server, "bob", "bob-new-password").status_code == 200


def test_the_users_tab_sets_a_password(server):
    admin, bob = server.session("admin1"), server.session("bob")
    fn = studio_server.endpoints(admin, server.url)["ui_set_password"]
    out = studio_server.raw_call(admin, server.url, fn, ["bob", "short"])
    # refused with one toast, the Users tab left as it was (no "Error" on its components)
    assert out["error"] is None and any("passwords need at least 8 characters" in n
                                        for n in out["notes"]), out
    assert store.verify_user(server.db, "bob", "short") is None
    assert bob.post(server.url + "api/progress", json={}).status_code == 200
    out = studio_server.raw_call(admin, server.url, fn, ["bob", "bob-tab-password"])
    assert out["error"] is None and out["output"][1] == ""  # the password box is cleared
    assert bob.post(server.url + "api/progress", json={}).status_code == 401
    assert login(server, "bob", "bob-tab-password").status_code == 200
    out = studio_server.raw_call(server.session("ann"), server.url, fn, ["admin1", "x-password"])
    assert out["error"] == "only admins may do this"


def test_a_role_change_ends_sessions(server):
    ann = server.session("ann")
    store.set_role(server.db, "ann", "admin")
    assert ann.post(server.url + "api/progress", json={}).status_code == 401
    assert server.session("ann").post(server.url + "api/users", json={}).status_code == 200


def test_a_huge_login_form_is_refused_unread(server):
    before = snapshot(server.db)
    r = requests.post(server.url + "login", data={"username": "ann", "password": "x" * (1 << 17)})
    assert r.status_code == 413 and "64 KiB" in r.json()["detail"]
    assert snapshot(server.db) == before


def test_users_passwd_on_the_command_line_still_works(tmp_path):
    db_path = tmp_path / "cli.duckdb"
    with store.Store(db_path) as db:
        store.add_user(db, "ann", "annotator", "ann-password")
    cmd = [sys.executable, str(studio_server.ROOT / "app.py"), "users", "passwd", "ann",
           "--password-stdin", "--db", str(db_path)]
    done = subprocess.run(cmd, input="ann-cli-password\n", text=True, capture_output=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    with store.Store(db_path) as db:
        assert store.verify_user(db, "ann", "ann-cli-password") == "annotator"
        assert store.verify_user(db, "ann", "ann-password") is None



def test_the_limiter_forgets_old_names():
    """Guessing with ever new names cannot grow the limiter without end."""
    from annotate.ui.sessions import LoginLimiter
    now = [0.0]
    limiter = LoginLimiter(per_name=2, per_address=10**9, window=60, lockout=60,
                           clock=lambda: now[0])
    for i in range(10_001):
        limiter.failed(f"name{i}", "10.0.0.1")
        limiter.failed(f"name{i}", "10.0.0.1")  # locked (its failures cleared)
    assert limiter.wait("name5", "10.0.0.2") == 60
    now[0] = 1000.0
    limiter.failed("late", "10.0.0.1")
    assert len(limiter._failures) <= 4 and len(limiter._locked) == 0
    assert limiter.wait("name5", "10.0.0.2") == 0
