"""The Resume button of the Jobs tab, in Debian's Chromium: a failed job runs again in its folder.

(The job is a stand-in that refuses at once: the button is the point here; the real trainer's
resume from a checkpoint is test_jobs_kill.py.)"""
import sys
from pathlib import Path

import pytest

from annotate import store
import studio_server
from jobs_support import labelled, wait_until

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
from test_ui_browser import ARGS, CHROMIUM, login  # noqa: E402  (the suite's own browser helpers)

REFUSING = "import sys; print('stand-in trainer: no such model', flush=True); sys.exit(2)"


def failed(srv, run_id):
    def check():
        srv.studio.jobs.poll()
        return store.get_run(srv.db, run_id)["status"] == "failed" and run_id not in srv.studio.jobs.jobs
    wait_until(check, f"run {run_id} to fail")
    return store.get_run(srv.db, run_id)


def test_resume_button_runs_a_failed_job_again(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    srv = studio_server.start(tmp_path, seed=labelled)
    srv.studio.jobs.command = [sys.executable, "-c", REFUSING]
    try:
        run_id = srv.studio.jobs.start("rm", {"max_steps": 2})
        error = failed(srv, run_id)["error"]
        assert error == "exited with status 2: stand-in trainer: no such model"
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000}, locale="en-US")
            login(page, srv, "admin1")
            page.get_by_role("tab", name="Jobs").click()
            expect(page.locator("#ps-runs")).to_contain_text("failed", timeout=30_000)
            expect(page.locator("#ps-run-pick input")).to_have_value(run_id, timeout=30_000)
            page.locator("#ps-resume-job").click()
            expect(page.get_by_text(f"Resumed {run_id}")).to_be_visible(timeout=30_000)
            browser.close()
        folder = srv.workspace / "runs" / run_id
        assert "resumed by the studio, from the start (no checkpoint)" in (folder / "log.txt").read_text()
        again = failed(srv, run_id)   # the same command, the same refusal, a second time
        assert again["error"] == error
        assert (folder / "output.txt").read_text().count("no such model") == 2
    finally:
        srv.close()
