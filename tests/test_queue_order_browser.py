"""The queue order panel (Users & overlap) in Debian's Chromium."""
import pytest

from annotate import store
from test_queue_order import WrittenReward, build, rank_and_store
from test_ui_browser import browser, expect, login, page, shot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    import studio_server
    srv = studio_server.start(tmp_path / "studio", seed=build)
    rank_and_store(srv.db, tmp_path, "uncertainty", WrittenReward())
    yield srv
    srv.close()


def test_admin_picks_uncertainty_and_sees_what_it_is_based_on(page, server):
    login(page, server, "admin1")
    page.get_by_role("tab", name="Users & overlap").click()
    table = page.locator("#ps-queue-orders")
    expect(table).to_contain_text("rm-sure", timeout=30_000)       # ranked by this model
    expect(table).to_contain_text("disagreement")
    page.locator("#ps-queue-order input").click()
    page.locator("[role=option]").filter(has_text="uncertainty").first.click()
    expect(page.locator("#ps-queue-order input")).to_have_value("uncertainty")
    page.locator("#ps-queue-order-rm input").click()
    page.locator("[role=option]").filter(has_text="rm-sure").first.click()
    expect(page.locator("#ps-queue-order-rm input")).to_have_value("rm-sure")
    page.locator("#ps-queue-order-set").click()
    expect(page.locator("#ps-queue-order-result")).to_contain_text("uncertainty", timeout=15_000)
    expect(table).to_contain_text("every round (rm-sure)")
    shot(page, "queue-order")
    assert store.priorities.queue_orders(server.db)["*"]["order"] == "uncertainty"
