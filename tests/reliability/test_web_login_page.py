"""The login page in Chromium: no API schema for strangers, and a locked login says why."""
import pytest
import requests

from annotation_data import seed_tasks
import studio_server

pytestmark = [pytest.mark.reliability, pytest.mark.browser]
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
from test_ui_browser import browser, login  # noqa: E402,F401  (the shared Chromium fixture)


def test_locked_login_says_why_and_the_page_holds_no_schema(browser, tmp_path):
    srv = studio_server.start(tmp_path, seed=lambda db: seed_tasks(db, pairwise=1))
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(srv.url)
        page.locator("input[type=password]").wait_for()
        assert page.evaluate("Object.keys(window.gradio_api_info).length") == 0
        for _ in range(10):
            requests.post(srv.url + "login", data={"username": "ann", "password": "wrong-password"})
        page.locator("input").first.fill("ann")
        page.locator("input[type=password]").fill(studio_server.PASSWORDS["ann"])
        page.get_by_role("button").first.click()
        expect(page.locator("#ps-login-limit")).to_contain_text(
            "too many failed logins; try again in", timeout=30_000)
        assert page.locator("#ps-whoami").count() == 0  # still on the login page
        login(page, srv, "bob")  # another name logs in as usual
    finally:
        context.close()
        srv.close()
