"""UI faults of issue 13, in Debian's Chromium: a refused action leaves the view as it was and
says so once in the page's language; admins claim no task by opening the studio; the Users
tab shows the current overlap; tables and messages follow the language switch."""
import os
import re
from pathlib import Path

import pytest

from annotate import store
from annotation_data import seed_tasks
import studio_server
from test_ui_browser import browser, login, page, pick, task_on_screen  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect
SHOTS = Path(os.environ.get("PREFSTUDIO_SHOTS", "/tmp/uifaults"))


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_error_badges(page):
    """Gradio marks each output of a handler that raised with a red 'Error' status."""
    expect(page.locator(".error")).to_have_count(0)
    assert "Error" not in page.locator("#ps-choice").inner_text() + page.locator("#ps-card-0").inner_text()


def switch_to_chinese(page):
    page.locator("#ps-lang label").filter(has_text="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile("^zh"), timeout=10_000)


@pytest.fixture
def server(tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: (seed_tasks(db, pairwise=2, required=2),
                                                          seed_tasks(db, pairwise=0, ranking=1, k=3,
                                                                     prefix="r")))
    yield srv
    srv.close()


def test_refused_pairwise_submit_keeps_the_task_and_says_why_once(page, server):
    login(page, server, "ann")
    task_id = task_on_screen(page)
    if "rank the" in page.locator("#ps-task-info").inner_text():
        page.locator("#ps-skip").click()
        task_id = task_on_screen(page)
    page.locator("#ps-submit").click()                       # nothing chosen
    expect(page.locator(".toast-body")).to_contain_text("choose A, B or tie first", timeout=10_000)
    no_error_badges(page)
    pick(page, "ps-choice", "B is better")                   # the choices are still clickable
    page.locator("#ps-submit").click()                       # B without a margin
    expect(page.locator(".toast-body").filter(has_text="by how much")).to_have_count(1, timeout=10_000)
    no_error_badges(page)
    shot(page, "refused-submit-en")
    assert task_on_screen(page) == task_id
    assert store.current_label(server.db, task_id, "ann") is None
    pick(page, "ps-margin", "Better")
    page.locator("#ps-submit").click()
    expect(page.locator("#ps-done-total b")).to_have_text("1", timeout=30_000)


def test_refused_ranking_submit_keeps_the_task(page, server):
    login(page, server, "bob")
    for _ in range(3):
        task_on_screen(page)
        if "rank the" in page.locator("#ps-task-info").inner_text():
            break
        page.locator("#ps-skip").click()
        page.wait_for_timeout(500)
    task_id = task_on_screen(page)
    switch_to_chinese(page)
    pick(page, "ps-rank-0", "1")
    page.locator("#ps-submit").click()
    toast = page.locator(".toast-body")
    expect(toast).to_contain_text("请给每个回答一个名次", timeout=10_000)
    expect(toast.locator(".l-en").first).to_be_hidden()
    expect(page.locator(".error")).to_have_count(0)
    expect(page.locator("#ps-rank-1 input[value='2']")).to_be_visible()
    shot(page, "refused-ranking-zh")
    assert task_on_screen_zh(page) == task_id


def task_on_screen_zh(page) -> str:
    info = page.locator("#ps-task-info .l-zh")
    expect(info).to_contain_text(re.compile(r"标注任务 \S+ ·"), timeout=30_000)
    return re.search(r"标注任务 (\S+) ·", info.inner_text()).group(1)


def admin_claims(server) -> int:
    return sum(c["annotator"] == "admin1" for c in store.open_claims(server.db))


def test_admin_opening_the_studio_claims_nothing_until_asked(page, server):
    login(page, server, "admin1")
    expect(page.locator("#ps-start")).to_be_visible(timeout=30_000)
    shot(page, "admin-landing-en")
    switch_to_chinese(page)
    expect(page.locator("#ps-start")).to_contain_text("开始标注")
    shot(page, "admin-landing-zh")
    assert admin_claims(server) == 0
    page.locator("#ps-start").click()
    task_on_screen_zh(page)
    expect(page.locator("#ps-start")).to_be_hidden()
    assert admin_claims(server) == 1


def test_users_tab_refusal_overlap_and_language(page, server):
    login(page, server, "admin1")
    switch_to_chinese(page)
    page.get_by_role("tab", name="用户与重叠").click()
    expect(page.locator("#ps-overlap input")).to_have_value("2", timeout=10_000)  # tasks need 2
    page.locator("#ps-user-name textarea, #ps-user-name input").first.fill("carol")
    page.locator("#ps-user-password input").fill("short")
    page.locator("#ps-add-user").click()
    toast = page.locator(".toast-body")
    expect(toast).to_contain_text("密码至少需要 8 个字符", timeout=10_000)
    expect(page.locator(".error")).to_have_count(0)
    expect(page.locator("#ps-users")).to_contain_text("admin1")
    expect(page.locator("#ps-users th").filter(has_text="用户名")).to_have_count(1)
    page.locator("#ps-user-password input").fill("long-enough-password")
    page.locator("#ps-add-user").click()
    expect(page.locator(".toast-body").filter(has_text="已添加 carol")).to_be_visible(timeout=10_000)
    expect(page.locator(".toast-body .l-en").filter(has_text="Added")).to_be_hidden()
    expect(page.locator("#ps-users")).to_contain_text("carol")
    page.locator("#ps-user-password input").fill("short2")
    page.locator("#ps-set-password").click()                 # the same rule for a new password
    expect(page.locator(".toast-body").filter(has_text="密码至少需要")).to_have_count(1, timeout=10_000)
    expect(page.locator(".error")).to_have_count(0)
    shot(page, "users-zh")
    assert store.role_of(server.db, "carol") == "annotator"
    assert store.verify_user(server.db, "carol", "long-enough-password") is not None


def test_agreement_rounds_and_explains(page, server):
    for name in ("ann", "bob"):
        task = server.studio.next_task(name)
        if task["kind"] != "pairwise":
            server.studio.skip_task(name, task["id"])
            task = server.studio.next_task(name)
        ids = [r["id"] for r in task["responses"]]
        server.studio.submit_label(name, task["id"], [[ids[0]], [ids[1]]], "better",
                                   duration_ms=9457)
    login(page, server, "admin1")
    page.get_by_role("tab", name="Agreement").click()
    page.locator("#ps-compute").click()
    expect(page.locator("#ps-agreement")).to_contain_text("no 95% interval below n = 10",
                                                          timeout=10_000)
    per_annotator = page.locator("#ps-per-annotator")
    expect(per_annotator).to_contain_text("380.7")
    assert "380.66" not in per_annotator.inner_text()
    shot(page, "agreement-en")
    switch_to_chinese(page)
    expect(page.locator("#ps-per-annotator th").filter(has_text="每小时标注数")).to_have_count(1)
    shot(page, "agreement-zh")


def test_agreement_without_shared_tasks_says_why(page, tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=2))
    try:
        task = srv.studio.next_task("ann")
        ids = [r["id"] for r in task["responses"]]
        srv.studio.submit_label("ann", task["id"], [[ids[0]], [ids[1]]], "better")
        login(page, srv, "admin1")
        page.get_by_role("tab", name="Agreement").click()
        page.locator("#ps-compute").click()
        expect(page.locator("#ps-per-task-note")).to_contain_text("No task has labels from 2",
                                                                  timeout=10_000)
    finally:
        srv.close()


def test_browse_headers_follow_the_language(page, server):
    task = server.studio.next_task("ann")
    ids = [r["id"] for r in task["responses"]]
    server.studio.submit_label("ann", task["id"], [[i] for i in ids],
                               "better" if len(ids) == 2 else None)
    login(page, server, "admin1")
    page.get_by_role("tab", name="Browse & export").click()
    page.locator("#ps-show").click()
    expect(page.locator("#ps-browse th").filter(has_text="needs")).to_have_count(1, timeout=10_000)
    shot(page, "browse-en")
    switch_to_chinese(page)
    expect(page.locator("#ps-browse th").filter(has_text="所需人数")).to_have_count(1)
    page.locator("#ps-table input").fill("labels")
    page.locator("#ps-table input").press("Enter")
    page.locator("#ps-show").click()
    expect(page.locator("#ps-browse th").filter(has_text="标注者")).to_have_count(1, timeout=10_000)
    shot(page, "browse-zh")
    page.locator("#ps-lang label").filter(has_text="English").click()
    expect(page.locator("#ps-browse th").filter(has_text="annotator")).to_have_count(1, timeout=10_000)
