"""The Jobs tab in Debian's Chromium: a form starts a job, its progress, command and plot
appear, and the page logs no warnings (the plots used to log Vega-Lite warnings every 3 s)."""
import re
import sys
import textwrap

import pytest

from annotate import store
import studio_server
from test_ui_browser import browser, login, page, shot  # noqa: F401  (the suite's browser fixtures)
from test_ui_jobs import labelled_store

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

# A stand-in trainer keeping the CLI contract (`prefstudio train rm --data F --out DIR ...`):
# a real process writing its run folder with RunLog, a step every 0.3 s.
STAND_IN = textwrap.dedent("""
    import argparse, sys, time
    sys.path.insert(0, {root!r})
    from annotate.runlog import RunLog
    p = argparse.ArgumentParser()
    p.add_argument("command"); p.add_argument("kind")
    p.add_argument("--out"); p.add_argument("--max-steps", type=int)
    a, _ = p.parse_known_args()
    log = RunLog(a.out, a.kind, {{"max_steps": a.max_steps}})
    for step in range(1, a.max_steps + 1):
        print(f"step {{step}}", flush=True)
        log.metric(step, loss=1.0 / step, accuracy=step / a.max_steps)
        time.sleep(0.3)
    log.finish("done", steps=a.max_steps)
""")


def test_a_form_starts_a_job_whose_progress_and_plot_appear_without_console_warnings(page, tmp_path):
    srv = studio_server.start(tmp_path, seed=labelled_store)
    fake = tmp_path / "stand_in.py"
    fake.write_text(STAND_IN.format(root=str(studio_server.ROOT)))
    srv.studio.jobs.command = [sys.executable, str(fake)]
    srv.studio.jobs.interval = 0.5
    console = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    try:
        login(page, srv, "admin1")
        page.locator("[role=tab]").filter(has_text="Jobs").click()
        # the reward-model form, with the fast preset's values shown
        expect(page.locator("#ps-job-base input")).to_have_value("minilm", timeout=30_000)
        expect(page.locator("#ps-job-max_steps input")).to_have_value("")   # blank: epochs decide
        expect(page.locator("#ps-job-beta")).to_be_hidden()
        page.locator("#ps-job-max_steps input").fill("12")
        console.clear()   # (what the page logs while it loads is not the Jobs tab's)
        page.locator("#ps-start-job").click()
        progress = page.locator("#ps-run-progress")
        expect(progress).to_contain_text("running", timeout=30_000)
        expect(page.locator("#ps-plot-loss img")).to_be_visible(timeout=30_000)
        expect(progress).to_contain_text("12 / 12", timeout=60_000)
        expect(progress).to_contain_text("done", timeout=30_000)
        command = page.locator("#ps-run-command textarea, #ps-run-command input").first
        expect(command).to_have_value(
            re.compile(r"^prefstudio train rm --data \S+ --out \S+ --base minilm "
                                     r"--max-steps 12 "))
        expect(page.locator("#ps-run-log textarea")).to_have_value(re.compile(r"step 11\nstep 12$"))
        run = store.list_runs(srv.db)[0]
        assert run["status"] == "done" and len(store.metrics(srv.db, run["id"])) == 24
        # another kind, another form: generation shows K and a prompt set, no base model
        page.locator("#ps-job-kind input").click()
        page.locator("[role=option]").filter(has_text="generate").first.click()
        expect(page.locator("#ps-job-k input")).to_have_value("2", timeout=30_000)
        expect(page.locator("#ps-job-prompts input")).to_have_value("all")
        expect(page.locator("#ps-job-base")).to_be_hidden()
        page.wait_for_timeout(7000)   # two more timer ticks with nothing new
        shot(page, "admin-jobs")
        noise = [(t, text) for t, text in console if t in ("warning", "error")]
        assert noise == [], "\n".join(map(str, noise))
    finally:
        srv.close()
