"""prefstudio queue-order on a real database with a real (tiny) reward model."""
import json
import os
import subprocess
import sys
from pathlib import Path

from annotate import store
from annotate.runlog import RunLog
from annotation_data import snapshot
from test_queue_order import build

APP = Path(__file__).resolve().parent.parent / "app.py"


def cli(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFSTUDIO_")}
    return subprocess.run([sys.executable, str(APP), *map(str, args)], text=True,
                          capture_output=True, env=env, timeout=600)


def test_uncertainty_with_a_tiny_reward_model_and_refusals(tmp_path, tiny_lm):
    from rewardmodel.model import RewardModel
    from rewardmodel.score import load_scorer

    db_path = tmp_path / "prefstudio.duckdb"
    rm_dir = tmp_path / "runs" / "rm-tiny"
    RewardModel.from_spec(str(tiny_lm), max_length=64).save(rm_dir)
    RunLog(rm_dir, "rm", {}, run_id="rm-tiny").finish("done")
    with store.Store(db_path) as db:
        build(db)
        store.ingest_run_dir(db, rm_dir)
        tasks = store.priorities.tasks_to_rank(db)
        before = snapshot(db)

    for args, message in [(("--order", "uncertainty"), "--rm: the uncertainty order needs"),
                          (("--order", "mix", "--rm", "rm-nope"), "is not a reward-model run"),
                          (("--order", "diverse", "--clusters", "0"), "--clusters: must be 1")]:
        done = cli("queue-order", "--db", db_path, *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    with store.Store(db_path) as db:
        assert snapshot(db) == before

    done = cli("queue-order", "--db", db_path, "--order", "uncertainty", "--rm", "rm-tiny", "--json")
    assert done.returncode == 0, done.stderr
    # the same reward model, loaded here: the smallest |r_a - r_b| must come first
    scorer = load_scorer(rm_dir)
    margins = {}
    for t in tasks:
        r = scorer.score([t["messages"]] * 2, [x["text"] for x in t["responses"]]).tolist()
        margins[t["id"]] = abs(r[0] - r[1])
    with store.Store(db_path) as db:
        rows = db.query("SELECT task_id, rank, rm FROM task_priorities ORDER BY rank")
        assert [r["task_id"] for r in rows] == sorted(margins, key=margins.get)
        assert {r["rm"] for r in rows} == {"rm-tiny"}
        assert store.priorities.queue_orders(db)["*"]["order"] == "uncertainty"
        assert store.upcoming_tasks(db, "ann", 6) == [r["task_id"] for r in rows]

    # the studio's way: a snapshot in, a run folder out, the server ingests it
    from annotate.ui import jobinputs
    job = tmp_path / "runs" / "queue-order-job"
    job.mkdir()
    with store.Store(db_path) as db:
        snap, n = jobinputs.write_round_tasks(db, job, None)
    assert n == 6
    done = cli("queue-order", "--tasks", snap, "--out", job, "--order", "uncertainty", "--rm", rm_dir)
    assert done.returncode == 0, done.stderr
    with store.Store(db_path) as db:
        assert store.ingest_run_dir(db, job)["priorities"] == 6
        again = db.query("SELECT task_id FROM task_priorities ORDER BY rank")
        assert [r["task_id"] for r in again] == sorted(margins, key=margins.get)
        [ranked] = store.priorities.rankings(db)
        assert ranked["tasks"] == 6 and ranked["rm"] == "rm-tiny"
        job_id = json.loads((job / "run.json").read_text())["id"]
        assert ranked["run_id"] == job_id       # the job's ranks replaced the CLI run's
        assert {r["run_id"] for r in db.query("SELECT run_id FROM task_priorities")} == {job_id}
