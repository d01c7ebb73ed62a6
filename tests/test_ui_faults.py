"""UI faults of issue 13 below the browser: one id for lineage, no AI labels said in words,
agreement intervals only from enough labels, one Chinese word per thing."""
import json
import re
import sys
import textwrap

import pytest

from annotate import agreement, store
from annotate.ui import text
from annotate.ui import runview
from annotate.ui.jobs import JobRunner
from annotate.ui.service import Studio
from cli import parse_command
import studio_server
from test_ui_jobs import labelled_store, wait_for

# A stand-in trainer that reads its data the way the real ones do (trainingdata.from_file,
# which imports the snapshot into a scratch store) and records the label ids it got.
READING_TRAINER = textwrap.dedent("""
    import argparse, sys
    sys.path.insert(0, {root!r})
    from annotate import trainingdata
    from annotate.runlog import RunLog
    p = argparse.ArgumentParser()
    p.add_argument("command"); p.add_argument("kind")
    p.add_argument("--data"); p.add_argument("--out"); p.add_argument("--max-steps", type=int)
    a, _ = p.parse_known_args()   # the studio's other options (filters) are not this test's
    data = trainingdata.from_file(a.data)
    log = RunLog(a.out, a.kind, {{"max_steps": a.max_steps}}, label_ids=data.label_ids)
    log.metric(1, loss=0.5)
    log.finish("done")
""")


def test_lineage_counts_the_snapshot_with_the_label_ids_of_browse(db, tmp_path):
    labelled_store(db)
    trainer = tmp_path / "trainer.py"
    trainer.write_text(READING_TRAINER.format(root=str(studio_server.ROOT)))
    runner = JobRunner(db, tmp_path / "workspace", command=[sys.executable, str(trainer)],
                       parse_command=parse_command)
    run_id = runner.start("rm", {"max_steps": 1})
    assert wait_for(runner, run_id, db)["status"] == "done"
    browse_ids = {r["id"] for r in store.browse(db, "labels")}
    inputs = json.loads((tmp_path / "workspace" / "runs" / run_id / "inputs.json").read_text())
    assert set(inputs) == browse_ids and len(inputs) == 2
    assert runview.detail(db, runner.runs, run_id)["labels_used"] == 2


def test_no_ai_labels_is_said_in_words(db, tmp_path):
    labelled_store(db)
    store.add_user(db, "boss", "admin", "boss-password")
    studio = Studio(db, tmp_path / "ws", parse_command)
    for call in (lambda: studio.export_pairs("boss", "ai"),
                 lambda: studio.start_job("boss", "rm", {"max_steps": 1, "source": "ai"})):
        with pytest.raises(store.StoreError) as err:
            call()
        assert str(err.value).startswith("there are no AI labels yet")
        assert str(tmp_path) not in str(err.value)
    assert store.list_runs(db) == []
    assert text.message_zh(str(err.value)).startswith("还没有 AI 标注")


def pairwise_label(first_wins: bool) -> dict:
    return {"task_id": "t", "annotator": "a", "shown_order": ["x", "y"],
            "ranking": [["x"], ["y"]] if first_wins else [["y"], ["x"]]}


def test_position_bias_interval_needs_enough_labels():
    one = agreement.position_bias([pairwise_label(True)])
    assert one["first_shown_wins"] == 1.0 and one["interval"] is None and one["min_n"] == 10
    ten = agreement.position_bias([pairwise_label(i % 2 == 0) for i in range(10)])
    assert ten["interval"] == pytest.approx([0.5 - 0.30990, 0.5 + 0.30990], abs=1e-4)


def test_chinese_keeps_tasks_and_jobs_apart():
    zh = {key: pair[1] for key, pair in text.STRINGS.items()}
    assert "任务" not in zh["tab_jobs"] and "任务" not in zh["job_kind"]
    bare = [k for k, v in zh.items() if re.search(r"(?<!标注)任务", v)]
    assert bare == []


def test_messages_translate_and_unknown_ones_stay_english():
    assert text.message_zh("give every response a rank (missing: B, C)") == "请给每个回答一个名次（缺少：B, C）"
    assert text.message_zh("passwords need at least 8 characters") == "密码至少需要 8 个字符"
    assert text.message_zh("something new") == "something new"
    html = text.bilingual_message("user 'x<y' already exists")
    assert "x&lt;y" in html and 'class="l-zh">用户' in html
