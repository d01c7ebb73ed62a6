"""The Models & rounds tab and Browse's held-out controls in Debian's Chromium."""
import pytest

from annotate import store
from test_models_page import QUESTIONS, XSS, server  # noqa: F401 (the same project, served)
from test_ui_browser import browser, expect, login, page, shot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def test_admin_sees_models_lineage_and_rounds_and_marks_a_prompt_held_out(page, server):
    login(page, server, "admin1")
    page.get_by_role("tab", name="Models & rounds").click()
    page.locator("#ps-models-refresh").click()
    lineage = page.locator("#ps-lineage svg")
    expect(lineage).to_contain_text("ppo-a", timeout=30_000)
    expect(lineage).to_contain_text(XSS)              # shown as text, never as a live tag
    assert page.locator("#ps-lineage img").count() == 0 and page.dialogs == []
    assert page.locator("#ps-rounds-plot img").get_attribute("src").startswith("data:image/png;base64,")
    expect(page.locator("#ps-models")).to_contain_text("rm-a")
    shot(page, "models-tab")

    page.get_by_role("tab", name="Browse & export").click()
    page.locator("#ps-table input").fill("prompts")
    page.locator("#ps-table input").press("Enter")
    page.locator("#ps-show").click()
    target = store.prompt_row(QUESTIONS[0])["id"]
    cell = page.locator("#ps-browse span").get_by_text(target, exact=True)
    cell.click()
    expect(page.locator("#ps-held-out-ids textarea")).to_have_value(target, timeout=15_000)
    page.locator("#ps-held-out-apply").click()
    expect(page.locator("#ps-held-out-result")).to_contain_text("changed", timeout=15_000)
    assert store.held_out_ids(server.db) == {target}
