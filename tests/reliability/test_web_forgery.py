"""The issue's cross-port forgery, in real Chromium: a page on another port of 127.0.0.1 tries
to act as the logged-in admin. Nothing it sends is done, and it reads nothing; the same calls
from the studio's own page work."""
import functools
import http.server
import threading

import pytest

from annotate import store
from annotation_data import seed_tasks, snapshot
import studio_server

pytestmark = [pytest.mark.reliability, pytest.mark.browser]
playwright_api = pytest.importorskip("playwright.sync_api")
from test_ui_browser import browser, login  # noqa: E402,F401  (the shared Chromium fixture)

# what the attacker page runs: the fetch from the issue, a read of the user list, Gradio's
# queue and run routes, and the "simple" requests a browser sends without asking first
# (a multipart upload and a login form), each reporting what it got
ATTACK_JS = """async (studio) => {
  const out = {};
  const attempt = async (name, path, init) => {
    try {
      const r = await fetch(studio + path, {credentials: "include", ...init});
      out[name] = r.type === "opaque" ? "opaque" : r.status + " " + (await r.text()).slice(0, 200);
    } catch (err) { out[name] = "blocked: " + err.message; }
  };
  const json = (body) => ({method: "POST", headers: {"Content-Type": "application/json"},
                           body: JSON.stringify(body)});
  await attempt("add_admin", "/api/users",
                json({action: "add", name: "x-admin", role: "admin", password: "x-admin-password"}));
  await attempt("read_users", "/api/users", json({}));
  await attempt("gradio_run", "/gradio_api/run/users",
                json({data: ["add", "y-admin", "admin", "y-admin-password"]}));
  await attempt("gradio_join", "/gradio_api/queue/join",
                json({data: [], fn_index: 0, session_hash: "forged", event_data: null, trigger_id: null}));
  const upload = new FormData();
  upload.append("files", new Blob(["{}"]), "forged.jsonl");
  await attempt("upload", "/gradio_api/upload", {method: "POST", mode: "no-cors", body: upload});
  const form = new FormData();
  form.append("username", "ann"); form.append("password", "ann-password");
  await attempt("login", "/login", {method: "POST", mode: "no-cors", body: form});
  return out;
}"""


@pytest.fixture
def attacker(tmp_path):
    """A tiny http.server on another port of the same host, serving an empty page."""
    (tmp_path / "attack.html").write_text("<!doctype html><title>cat pictures</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/attack.html"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=1))
    yield srv
    srv.close()


def test_a_page_on_another_port_cannot_act_as_the_admin(browser, server, attacker):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    login(page, server, "admin1")
    before = snapshot(server.db)
    cached = sorted((server.workspace / "tmp").rglob("*"))
    studio = server.url.rstrip("/")

    page.goto(attacker)
    out = page.evaluate(ATTACK_JS, studio)
    for name in ("add_admin", "read_users", "gradio_run", "gradio_join"):
        assert out[name].startswith("blocked"), (name, out[name])  # the preflight was refused
    assert out["upload"] == out["login"] == "opaque"  # sent without asking first, but:
    assert snapshot(server.db) == before
    assert store.role_of(server.db, "x-admin") is None and store.role_of(server.db, "y-admin") is None
    assert sorted((server.workspace / "tmp").rglob("*")) == cached  # no file was stored

    page.goto(server.url)  # still admin1 (the forged login of ann was refused), and from the
    playwright_api.expect(page.locator("#ps-whoami")).to_contain_text("admin1 · admin")
    # studio's own page the same call works
    result = page.evaluate("""async () => {
      const r = await fetch("/api/users", {method: "POST", credentials: "include",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({action: "add", name: "friend", role: "annotator", password: "friend-password"})});
      return r.status;
    }""")
    assert result == 200 and store.role_of(server.db, "friend") == "annotator"
    context.close()
