"""Markdown of every kind in prompts and responses, in the annotator's pairwise and ranking
views in Chromium: it renders (links, tables, code), nothing in it runs or loads, Submit and
Skip stay on screen; and a task that cannot be shown gives one message and still offers Skip."""
import json
import re

import pytest

from annotation_data import seed_tasks
import studio_server

pytestmark = [pytest.mark.reliability, pytest.mark.browser]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
from test_ui_browser import browser, login  # noqa: E402,F401  (the shared Chromium fixture)

MARKDOWN = {
    "link": "See [the docs](https://example.com/docs) and <https://example.com/auto>.",
    "mail": "Write to [us](mailto:team@example.com).",
    "bad link": "[click](javascript:window.__pwned='link')",
    "image": "![chart](https://example.com/chart.png) ![local](/gradio_api/file=/etc/passwd)",
    "table": "| lang | call |\n|---|---|\n| Python | `sorted(xs)` |\n| Rust | `v.sort()` |",
    "code": "```python\nprint('<b>not bold</b>')\n```\n\nand `inline <i>code</i>`",
    "raw html": "<div style='position:fixed;inset:0;background:red'>cover</div><b>bold?</b>",
    "script": "<script>window.__pwned = 'script'</script><img src=x onerror=\"window.__pwned='img'\">",
    "template": "${window.__pwned = 'tpl'} {{7*7}}",
    "heading and list": "# Big\n\n1. one\n2. two\n\n> quoted\n\n---",
}
TEXT = "\n\n".join(MARKDOWN.values())


def project(db):
    seed_tasks(db, pairwise=1, ranking=1, k=3, texts={0: TEXT, 1: MARKDOWN["table"], 2: MARKDOWN["code"]},
               prefix=TEXT + "\n\n")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, locale="en-US")
    pg = context.new_page()
    pg.dialogs, pg.outside = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()


def check_view(page, server):
    """The task on screen renders its Markdown safely, with Submit and Skip usable."""
    expect(page.locator("#ps-task-info")).to_contain_text(re.compile(r"Task \S+ ·"), timeout=30_000)
    expect(page.locator("#ps-submit")).to_be_visible()
    expect(page.locator("#ps-skip")).to_be_visible()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None and page.dialogs == []
    for root in (page.locator("#ps-chat"), page.locator(".ps-card").filter(has_text="the docs")):
        expect(root.locator("table").first).to_contain_text("sorted(xs)")
        expect(root.locator("pre code").first).to_contain_text("print('<b>not bold</b>')")
        assert root.locator(".ps-md script, .ps-md img, .ps-md iframe, .ps-md style, .ps-md b, "
                            ".ps-md i, .ps-md div").count() == 0
        hrefs = root.locator("a").evaluate_all("els => els.map(e => [e.href, e.rel, e.target])")
        # (an image is never loaded: with images off, ![chart](url) is "!" and a plain link)
        assert {h[0] for h in hrefs} == {"https://example.com/docs", "https://example.com/auto",
                                         "mailto:team@example.com", "https://example.com/chart.png"}
        assert all(h[1] == "noopener noreferrer nofollow" and h[2] == "_blank" for h in hrefs)
        expect(root.locator(".ps-md").first).to_contain_text("<script>")  # shown as text
    assert page.outside == []  # no image or anything else was fetched from elsewhere


def wait_for_skip(page, server, task_id):
    """Until ann's skip of the task is in the store (a click's event runs on the server)."""
    for _ in range(100):
        if server.db.scalar("SELECT count(*) FROM skips WHERE task_id = ? AND annotator = 'ann'",
                            [task_id]):
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"the skip of {task_id} never reached the store")


def test_markdown_renders_safely_in_pairwise_and_ranking_views(page, tmp_path):
    srv = studio_server.start(tmp_path, seed=project)
    page.on("request", lambda r: None if r.url.startswith(srv.url) else page.outside.append(r.url))
    try:
        login(page, srv, "ann")
        kinds = []
        for _ in range(2):
            check_view(page, srv)
            task_id = re.search(r"Task (\S+) ·", page.locator("#ps-task-info").inner_text()).group(1)
            if page.locator("#ps-choice").is_visible():
                kinds.append("pairwise")
                page.locator("#ps-choice label").filter(has_text="A is better").click()
                page.locator("#ps-margin label").filter(has_text="Slightly better").click()
                page.locator("#ps-submit").click()
                expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)
            else:
                kinds.append("ranking")
                page.locator("#ps-skip").click()  # Skip works here: the task comes back last
                wait_for_skip(page, srv, task_id)
                if len(kinds) == 1:  # skipped first: the pairwise task comes next
                    expect(page.locator("#ps-task-info")).not_to_contain_text(task_id, timeout=30_000)
        assert sorted(kinds) == ["pairwise", "ranking"]
        assert srv.db.scalar("SELECT count(*) FROM labels WHERE annotator = 'ann'") == 1
    finally:
        srv.close()


def broken_project(db):
    """Two tasks; the prompt row of one holds content no renderer takes (an object, as a
    hand-edited database or an older tool might leave it)."""
    seed_tasks(db, pairwise=2)
    prompt = db.query("SELECT id FROM prompts ORDER BY id LIMIT 1")[0]["id"]
    with db.write() as cur:
        cur.execute("UPDATE prompts SET messages = ? WHERE id = ?",
                    [json.dumps([{"role": "user", "content": {"parts": ["hi"]}}]), prompt])


def test_a_task_that_cannot_be_shown_still_offers_skip(page, tmp_path):
    srv = studio_server.start(tmp_path, seed=broken_project)
    try:
        login(page, srv, "ann")
        info = page.locator("#ps-task-info")
        expect(info).to_contain_text(re.compile(r"Task \S+"), timeout=30_000)
        if "cannot be shown" not in info.inner_text():  # the good task first: label it
            page.locator("#ps-choice label").filter(has_text="B is better").click()
            page.locator("#ps-margin label").filter(has_text="Better").click()
            page.locator("#ps-submit").click()
        expect(info).to_contain_text("cannot be shown", timeout=30_000)
        expect(page.locator("#ps-skip")).to_be_visible()
        expect(page.locator("#ps-submit")).to_be_hidden()
        assert page.locator(".toast-body, .error").count() == 0  # one message, no "Error" toast
        broken = re.search(r"Task (\S+) cannot", info.inner_text()).group(1)
        page.locator("#ps-skip").click()
        wait_for_skip(page, srv, broken)
    finally:
        srv.close()
