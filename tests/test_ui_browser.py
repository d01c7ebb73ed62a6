"""The studio in Debian's Chromium through Playwright: log in, label, rank, switch language, XSS."""
import sys
import json
import re
from pathlib import Path

import pytest

from annotate import store
from annotation_data import seed_tasks
import studio_server

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, locale="en-US")
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(page, server, user):
    page.goto(server.url)
    page.locator("input").first.wait_for()
    page.locator("input").first.fill(user)
    page.locator("input[type=password]").fill(studio_server.PASSWORDS[user])
    page.get_by_role("button").first.click()
    expect(page.locator("#ps-whoami")).to_contain_text(user, timeout=30_000)


def task_on_screen(page) -> str:
    # (while an event runs Gradio overlays "processing | 0.4s" on the component: match the id)
    info = page.locator("#ps-task-info")
    expect(info).to_contain_text(re.compile(r"Task \S+ ·"), timeout=30_000)
    return re.search(r"Task (\S+) ·", info.inner_text()).group(1)


def done_total(page) -> str:
    return page.locator("#ps-done-total b").inner_text()


def pick(page, radio_id, text):
    page.locator(f"#{radio_id} label").filter(has_text=text).first.click()


@pytest.fixture
def pairwise_server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=2))
    yield srv
    srv.close()


@pytest.fixture
def ranking_server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=0, ranking=1, k=4))
    yield srv
    srv.close()


def test_login_and_label_a_pairwise_task_with_a_margin(page, pairwise_server):
    srv = pairwise_server
    page.goto(srv.url)
    page.locator("input[type=password]").wait_for()
    shot(page, "login")
    login(page, srv, "ann")
    task_id = task_on_screen(page)
    shown = store.shown_order(task_id, "ann", store.get_task(srv.db, task_id)["response_ids"])
    expect(page.locator("#ps-card-1")).to_contain_text("Answer")
    pick(page, "ps-choice", "B is better")
    pick(page, "ps-margin", "Slightly better")
    page.locator("#ps-rationale textarea").fill("B explains the key argument")
    shot(page, "annotator-pairwise")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)
    row = store.current_label(srv.db, task_id, "ann")
    assert [list(g) for g in row["ranking"]] == [[shown[1]], [shown[0]]]
    assert row["margin_level"] == "slightly" and row["rationale"] == "B explains the key argument"
    assert list(row["shown_order"]) == shown and row["duration_ms"] > 0
    assert task_on_screen(page) != task_id  # the next task is on screen


def test_keyboard_shortcuts_label_a_pairwise_task(page, pairwise_server):
    srv = pairwise_server
    login(page, srv, "bob")
    task_id = task_on_screen(page)
    shown = store.shown_order(task_id, "bob", store.get_task(srv.db, task_id)["response_ids"])
    page.locator("body").click()
    for key in ("a", "1", "Enter"):
        page.keyboard.press(key)
    expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)
    row = store.current_label(srv.db, task_id, "bob")
    assert [list(g) for g in row["ranking"]] == [[shown[0]], [shown[1]]]
    assert row["margin_level"] == "significantly"


def test_rank_a_four_way_task_with_a_tie(page, ranking_server):
    srv = ranking_server
    login(page, srv, "ann")
    task_id = task_on_screen(page)
    shown = store.shown_order(task_id, "ann", store.get_task(srv.db, task_id)["response_ids"])
    ranks = page.locator(".ps-rank").filter(has=page.locator("input"))
    visible = [i for i in range(ranks.count()) if ranks.nth(i).is_visible()]
    assert len(visible) == 4
    for slot, rank in zip(visible, ["1", "2", "2", "3"]):  # A best, B and C tied, D last
        ranks.nth(slot).locator("label").filter(has_text=rank).first.click()
    shot(page, "annotator-ranking")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-task-info")).to_contain_text("Nothing left", timeout=30_000)
    row = store.current_label(srv.db, task_id, "ann")
    assert [sorted(g) for g in row["ranking"]] == [[shown[0]], sorted(shown[1:3]), [shown[3]]]
    assert row["margin_level"] is None
    # C(4,2) = 6 pairs minus the tie: 5 pairs for training
    assert len(store.label_pairs(srv.db, annotator="ann")) == 5


def test_ranking_without_every_rank_is_refused(page, ranking_server):
    srv = ranking_server
    login(page, srv, "bob")
    task_on_screen(page)
    page.locator(".ps-rank").first.locator("label").filter(has_text="1").first.click()
    page.locator("#ps-submit").click()
    expect(page.get_by_text("give every response a rank")).to_be_visible(timeout=30_000)
    assert srv.db.scalar("SELECT count(*) FROM labels") == 0


def test_switch_language_and_keep_it(page, pairwise_server):
    srv = pairwise_server
    login(page, srv, "ann")
    task_on_screen(page)
    expect(page.locator("#ps-choice")).to_contain_text("Which response is better?")
    page.locator("#ps-lang label").filter(has_text="中文").click()
    expect(page.locator("#ps-choice")).to_contain_text("哪个回答更好", timeout=10_000)
    expect(page.locator("[role=tab]").nth(1)).to_have_text("我的标注")  # a tab not on screen too
    expect(page.locator("#ps-progress")).to_contain_text("已完成")  # server-rendered HTML
    assert page.locator("#ps-progress").inner_text().count("done") == 0
    shot(page, "annotator-chinese")
    page.reload()
    expect(page.locator("#ps-submit")).to_contain_text("提交", timeout=30_000)
    page.locator("#ps-lang label").filter(has_text="English").click()
    expect(page.locator("#ps-submit")).to_contain_text("Submit", timeout=10_000)
    expect(page.locator("[role=tab]").nth(1)).to_have_text("My labels")


def test_undo_then_edit_from_my_labels(page, pairwise_server):
    srv = pairwise_server
    login(page, srv, "cid")
    task_id = task_on_screen(page)
    pick(page, "ps-choice", "A is better")
    pick(page, "ps-margin", "Better")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)
    page.locator("#ps-undo").click()  # the task comes back, answered as before
    expect(page.locator("#ps-task-info")).to_contain_text(task_id, timeout=30_000)
    expect(page.locator("#ps-choice input:checked")).to_have_value("A")
    expect(page.locator("#ps-done-total b")).to_have_text("0", timeout=30_000)  # undo counted
    assert store.current_label(srv.db, task_id, "cid") is None
    pick(page, "ps-choice", "Tie")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)
    assert len(store.current_label(srv.db, task_id, "cid")["ranking"]) == 1  # a tie

    page.locator("[role=tab]").filter(has_text="My labels").click()
    expect(page.locator("#ps-my-labels")).to_contain_text(task_id, timeout=30_000)
    page.locator("#ps-edit").click()
    expect(page.locator("#ps-task-info")).to_contain_text("Editing", timeout=30_000)
    pick(page, "ps-choice", "B is better")
    pick(page, "ps-margin", "Significantly better")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-task-info")).not_to_contain_text("Editing", timeout=30_000)
    rows = srv.db.query("SELECT ranking, margin_level, superseded_by FROM labels "
                        "WHERE task_id = ? AND annotator = 'cid' ORDER BY created_at", [task_id])
    assert len(rows) == 3 and [r["superseded_by"] is None for r in rows] == [False, False, True]
    assert rows[2]["margin_level"] == "significantly" and len(rows[2]["ranking"]) == 2


XSS = [
    "<script>window.__xss = 'script'; alert('script')</script>",
    "<img src=x onerror=\"window.__xss = 'img'; alert('img')\">",
    "[click me](javascript:window.__xss='md-link')",
    "<a href=\"javascript:window.__xss='a'\" id=\"evil\">raw link</a>",
    "<svg onload=\"window.__xss = 'svg'\"></svg>",
    "<iframe srcdoc=\"<script>parent.__xss = 'iframe'</script>\"></iframe>",
    "${window.__xss = 'template'} {{constructor.constructor('window.__xss = 1')()}}",
    "<details open ontoggle=\"window.__xss = 'details'\">x</details>",
    "![x](javascript:window.__xss='image') <style>body { display: none }</style>",
    "<body onload=\"window.__xss = 'body'\"> <input autofocus onfocus=\"window.__xss='focus'\">",
]


def xss_project(db):
    payload = "\n\n".join(XSS)
    seed_tasks(db, pairwise=1, ranking=1, k=3, required=2, texts={0: payload, 1: "ok " + XSS[1], 2: XSS[0]},
               prefix=XSS[0] + " ")
    # another annotator's rationale carries a payload too (the admin browses it)
    task = store.get_task(db, store.task_ids(db)[0])
    row = store.label_row(task, "eve", [[task["response_ids"][0]], task["response_ids"][1:]],
                          rationale=payload)
    store.add_labels(db, [row])


def assert_no_script_ran(page):
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    for sel in (".ps-card", ".ps-chat"):
        assert page.locator(f"{sel} script, {sel} img, {sel} iframe, {sel} svg, {sel} input, "
                            f"{sel} details, {sel} style").count() == 0
    hrefs = page.locator(".ps-card a, .ps-chat a").evaluate_all("els => els.map(e => e.href)")
    assert all(h.startswith(("http:", "https:", "mailto:")) for h in hrefs)


def test_injected_html_never_runs(page, tmp_path):
    srv = studio_server.start(tmp_path, seed=xss_project)
    try:
        login(page, srv, "ann")
        for _ in range(2):  # both tasks: pairwise and 3-way
            task_on_screen(page)
            expect(page.locator("#ps-chat")).to_contain_text("<script>")  # shown as text
            expect(page.locator(".ps-card").first).to_contain_text("<")
            assert_no_script_ran(page)
            if page.locator("#ps-choice").is_visible():
                pick(page, "ps-choice", "A is better")
                pick(page, "ps-margin", "Better")
            else:
                ranks = page.locator(".ps-rank")
                for i, slot in enumerate([s for s in range(ranks.count()) if ranks.nth(s).is_visible()]):
                    ranks.nth(slot).locator("label").filter(has_text=str(i + 1)).first.click()
            page.locator("#ps-rationale textarea").fill(XSS[1])
            shot(page, "xss-annotator")
            page.locator("#ps-submit").click()
            page.wait_for_timeout(1500)
        page.locator("[role=tab]").filter(has_text="My labels").click()
        expect(page.locator("#ps-my-labels")).to_contain_text("onerror", timeout=30_000)
        assert_no_script_ran(page)

        page.goto(srv.url + "logout")
        login(page, srv, "admin1")
        page.locator("[role=tab]").filter(has_text="Browse").click()
        for table in ("responses", "labels", "prompts", "pairs"):
            page.locator("#ps-table input").fill(table)
            page.locator("#ps-table input").press("Enter")
            page.locator("#ps-show").click()
            expect(page.locator("#ps-browse")).to_contain_text("<", timeout=30_000)
            assert_no_script_ran(page)
        shot(page, "xss-admin-browse")
    finally:
        srv.close()


def test_admin_sees_admin_tabs_annotator_does_not(page, pairwise_server):
    srv = pairwise_server
    login(page, srv, "ann")
    expect(page.locator("[role=tab]")).to_have_count(2)
    page.goto(srv.url + "logout")
    login(page, srv, "admin1")
    expect(page.locator("[role=tab]")).to_have_count(8, timeout=30_000)  # + import, browse, agreement, users, jobs, models
    page.locator("[role=tab]").filter(has_text="Browse").click()
    page.locator("#ps-show").click()
    expect(page.locator("#ps-browse")).to_contain_text("pairwise", timeout=30_000)
    shot(page, "admin-browse")
    page.locator("[role=tab]").filter(has_text="Users").click()
    expect(page.locator("#ps-users")).to_contain_text("admin1", timeout=30_000)
    page.locator("#ps-user-name textarea").fill("newcomer")
    page.locator("#ps-user-password input").fill("newcomer-password")
    page.locator("#ps-add-user").click()
    expect(page.locator("#ps-users")).to_contain_text("newcomer", timeout=30_000)
    assert store.verify_user(srv.db, "newcomer", "newcomer-password") == "annotator"
    shot(page, "admin-users")
