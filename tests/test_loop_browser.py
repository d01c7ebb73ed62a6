"""Issue 13's whole loop in Debian's Chromium, as two people would do it: an admin and an
annotator, each in their own browser context, a real server, real job processes on tiny
models that live in the workspace's models/ folder (so every form picks them by name).

admin imports prompts (two held out) → generates round 0 from the Jobs form → the annotator
labels round 0 → the admin trains a reward model and sees its accuracy on the Models page →
trains a policy against it → evaluates it on the held-out prompts → starts round 1 from the
policy on the Models page → the annotator's queue shows round-1 tasks. Nothing is typed as a
path, nothing goes around the UI (the store is read only to check what the UI did).
"""
import json
import re
import shutil

import pytest

from annotate import store
from annotate.store import models as model_queries
from annotate.ui.forms import FIELDS
from annotate.ui.jobs_tab import ALL_FIELDS
from annotate.ui.models import MODEL_COLUMNS
import studio_server
from test_ui_browser import browser, expect, login, page, shot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

TRAINING = ["tell me a short story about a cat", "write a poem about the sun",
            "how do i sort a list in python", "what is good tea"]
HELD_OUT = ["explain why the moon is here", "tell me about a happy dog"]
JOB_TIMEOUT = 300_000   # ms: a tiny job is seconds; a loaded machine starts python slowly


@pytest.fixture
def studio(tmp_path, tiny_lm, tiny_bert):
    models = tmp_path / "workspace" / "models"   # what an admin puts beside the database
    shutil.copytree(tiny_lm, models / "tiny-lm")
    shutil.copytree(tiny_bert, models / "tiny-bert")
    srv = studio_server.start(tmp_path)
    srv.studio.jobs.interval = 0.5
    yield srv
    srv.close()


def choose(page, elem_id, option):
    """Pick ``option`` in a dropdown, as a mouse user does."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def job_form(page, kind):
    """Pick a job kind and wait for its form: exactly its fields shown (they come with their
    values in the same update, which must land before any field is touched)."""
    choose(page, "ps-job-kind", kind)
    for dest in ALL_FIELDS:
        if dest in FIELDS[kind]:
            expect(page.locator(f"#ps-job-{dest}")).to_be_visible()
        else:
            expect(page.locator(f"#ps-job-{dest}")).to_be_hidden()


def fill(page, field, value):
    page.locator(f"#ps-job-{field} input").fill(str(value))


def start_and_wait(page, kind) -> str:
    """Start the filled form; the run's progress panel says when it is done (or why not)."""
    page.locator("#ps-start-job").click()
    progress = page.locator("#ps-run-progress")
    prefix = kind.replace("_", "-")
    try:
        expect(progress).to_contain_text(re.compile(rf"{prefix}-\S+ · "), timeout=30_000)
    except AssertionError:   # refused: the toast says why
        raise AssertionError(page.locator(".toast-body").all_inner_texts()) from None
    run_id = re.search(rf"({prefix}-\S+) · ", progress.text_content()).group(1)
    expect(progress).to_contain_text(re.compile(rf"{re.escape(run_id)} · (done|failed|stopped)"),
                                     timeout=JOB_TIMEOUT)
    assert f"{run_id} · done" in progress.text_content(), (
        progress.text_content(), page.locator("#ps-run-log textarea").input_value())
    return run_id


def task_info(page) -> str:
    info = page.locator("#ps-task-info")
    expect(info).to_contain_text(re.compile(r"Task \S+ ·|Nothing left"), timeout=30_000)
    return info.inner_text()


def label_everything(page) -> int:
    """Answer every task in the queue with the keyboard (A is significantly better)."""
    labelled = 0
    while "Nothing left" not in (text := task_info(page)):
        assert "round 0" in text, text
        page.locator("body").click()
        for key in ("a", "1", "Enter"):
            page.keyboard.press(key)
        labelled += 1
        expect(page.locator("#ps-done-total b")).to_have_text(str(labelled), timeout=30_000)
    return labelled


def cell(page, run_id, column):
    """A cell of the Models page's table: the run's row, the column's place."""
    row = page.locator("#ps-models tr").filter(has_text=run_id)
    return row.locator("td").nth(MODEL_COLUMNS.index(column))


def model(srv, run_id) -> dict:
    return {m["run_id"]: m for m in model_queries.model_runs(srv.db)}[run_id]


def test_the_whole_loop_from_prompts_to_round_one_through_the_browser(page, browser, studio,
                                                                       tmp_path):
    srv = studio
    login(page, srv, "admin1")

    # 1. import prompts, two of them held out, from a file the admin uploads
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "held_out": p in HELD_OUT}) + "\n"
                               for p in TRAINING + HELD_OUT))
    page.get_by_role("tab", name="Import").click()
    page.locator("#ps-upload input[type=file]").set_input_files(str(prompts))
    expect(page.locator("#ps-upload").get_by_role("cell", name="prompts.jsonl")).to_be_visible(
        timeout=30_000)   # uploaded
    page.locator("#ps-do-import").click()
    expect(page.locator("#ps-import-result")).to_contain_text("prompts", timeout=30_000)
    held_out = store.held_out_ids(srv.db)
    assert len(held_out) == 2 and len(store.list_prompts(srv.db)) == 6

    # 2. round 0: two candidates per prompt from the local model, picked by name
    page.get_by_role("tab", name="Jobs").click()
    job_form(page, "generate")
    choose(page, "ps-job-model", "tiny-lm")
    expect(page.locator("#ps-job-prompts input")).to_have_value("all")
    fill(page, "k", 2)
    fill(page, "max_new_tokens", 8)
    start_and_wait(page, "generate")
    round0 = srv.db.query("SELECT id FROM tasks WHERE round = 0")
    assert len(round0) >= 5   # a task per prompt whose 2 candidates differ

    # 3. the annotator, in a browser of their own, labels round 0
    annotator = browser.new_context(viewport={"width": 1300, "height": 1000}, locale="en-US")
    ann = annotator.new_page()
    try:
        login(ann, srv, "ann")
        assert label_everything(ann) == len(round0)
        shot(ann, "loop-annotator-round0-done")

        # 4. a reward model on the local encoder, picked by name; the data: the labels
        job_form(page, "rm")
        choose(page, "ps-job-base", "tiny-bert")
        fill(page, "max_steps", 3)
        fill(page, "batch_size", 2)
        fill(page, "lr", "0.001")
        rm_id = start_and_wait(page, "rm")
        # it used the labels of every prompt but the held-out ones (lineage)
        trained = [t for t in round0 if store.get_task(srv.db, t["id"])["prompt_id"] not in held_out]
        assert model(srv, rm_id)["labels"] == len(trained) < len(round0)

        # 5. its accuracy: an evaluation job, whose numbers the Models page shows
        job_form(page, "eval_rm")
        choose(page, "ps-job-model", rm_id)   # (the picker offers reward models here)
        start_and_wait(page, "eval_rm")
        page.get_by_role("tab", name="Models & rounds").click()
        page.locator("#ps-models-refresh").click()
        expect(page.locator("#ps-models")).to_contain_text(rm_id, timeout=30_000)
        accuracy = model(srv, rm_id)["accuracy"]
        assert accuracy is not None and 0 <= accuracy <= 1
        expect(cell(page, rm_id, "accuracy")).to_have_text(f"{round(accuracy, 3):g}")

        # 6. a policy trained against that reward model (rejection sampling), by name
        page.get_by_role("tab", name="Jobs").click()
        job_form(page, "rs")
        choose(page, "ps-job-model", "tiny-lm")
        choose(page, "ps-job-rm", rm_id)
        fill(page, "max_steps", 2)
        fill(page, "batch_size", 2)
        fill(page, "k", 2)
        fill(page, "max_new_tokens", 8)
        policy_id = start_and_wait(page, "rs")
        snapshot = (srv.workspace / "runs" / policy_id / "prompts.jsonl").read_text().splitlines()
        assert {json.loads(line)["prompt"][-1]["content"] for line in snapshot} == set(TRAINING)

        # 7. its evaluation: the held-out prompts are the form's default
        job_form(page, "eval_policy")
        choose(page, "ps-job-model", policy_id)
        choose(page, "ps-job-rm", rm_id)
        expect(page.locator("#ps-job-prompts input")).to_have_value("held_out")
        fill(page, "max_new_tokens", 8)
        eval_id = start_and_wait(page, "eval_policy")
        expect(page.locator("#ps-run-samples")).to_contain_text(HELD_OUT[0])
        samples = srv.studio.run_detail("admin1", eval_id)["samples"]
        assert {s["prompt"] for s in samples} == set(HELD_OUT)
        shot(page, "loop-admin-eval-policy")

        # 8. round 1 from the policy, on the Models page
        page.get_by_role("tab", name="Models & rounds").click()
        page.locator("#ps-models-refresh").click()
        expect(page.locator("#ps-models")).to_contain_text(policy_id, timeout=30_000)
        win_rate = model(srv, policy_id)["win_rate"]
        expect(cell(page, policy_id, "win_rate")).to_have_text(f"{round(win_rate, 3):g}")
        choose(page, "ps-model-pick", policy_id)
        page.get_by_label("Candidates per prompt (K)").fill("2")
        page.locator("#ps-next-round").click()
        expect(page.locator("#ps-models-result")).to_contain_text("generate-", timeout=30_000)
        next_id = re.search(r"generate-[\w-]+", page.locator("#ps-models-result").text_content())[0]
        page.get_by_role("tab", name="Jobs").click()
        choose(page, "ps-run-pick", next_id)
        expect(page.locator("#ps-run-progress")).to_contain_text(
            re.compile(rf"{next_id} · (done|failed)"), timeout=JOB_TIMEOUT)
        assert f"{next_id} · done" in page.locator("#ps-run-progress").text_content()
        page.get_by_role("tab", name="Models & rounds").click()
        page.locator("#ps-models-refresh").click()
        lineage = page.locator("#ps-lineage svg.ps-lineage")   # policy → round 1's candidates
        expect(lineage).to_contain_text("round 1 candidates", timeout=30_000)
        shot(page, "loop-admin-models")

        # 9. the annotator's queue now hands out round-1 tasks
        ann.reload()
        expect(ann.locator("#ps-task-info")).to_contain_text("round 1", timeout=30_000)
        shot(ann, "loop-annotator-round1")
    finally:
        annotator.close()
    round1 = srv.db.query("SELECT id FROM tasks WHERE round = 1")
    assert round1 and not {r["id"] for r in round1} & {r["id"] for r in round0}
