"""``prefstudio judge`` as a subprocess: the database mode, the server's snapshot mode, the
report, bad input (exit 2, nothing changed) and an API key that must never be written down."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotate import judges, store
from chat_server import ChatServer, Reply, verdict
from judge_helpers import add_human, add_task, bt

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-9f8e7d6c5b4a39281706"


def cli(*args, env=None, timeout=300):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "app.py", "judge", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def db_path(tmp_path) -> Path:
    """A closed database file with four pairwise tasks, each labelled by two people."""
    path = tmp_path / "ws.duckdb"
    with store.Store(path) as db:
        for i in range(4):
            t = add_task(db, f"question {i}", [f"q={i} answer", "q=1.5 other"])
            a, b = t["response_ids"]
            for who in ("ann", "bob"):
                add_human(db, t, who, [[a], [b]] if i >= 2 else [[b], [a]])
    return path


def test_cli_judges_the_database_and_reports_agreement(db_path, tmp_path):
    with ChatServer(lambda r: verdict(bt(r.a, r.b))) as server:
        done = cli("--db", db_path, "--judge", server.spec(), "--both-orders", "--json",
                   "--out", tmp_path / "run")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["judged"] == 4 and summary["status"] == "done"
        assert summary["position_consistency"] == 1.0
        again = cli("--db", db_path, "--judge", server.spec(), "--json", "--out", tmp_path / "run2")
        assert json.loads(again.stdout)["tasks"] == 0              # nothing left to judge
        assert len(server.requests) == 8
    report = cli("--db", db_path, "--report", "--json")
    assert report.returncode == 0, report.stderr
    stats = json.loads(report.stdout)["judges"][summary["annotator"]]
    # People agree with the judge's q ordering on every task (q=0,1 < 1.5 < q=2,3).
    assert stats["accuracy"] == 1.0 and stats["cohen_kappa"] == 1.0 and stats["n_pairs"] == 4
    with store.Store(db_path, read_only=True) as db:
        assert store.get_run(db, summary["run_id"])["status"] == "done"
        assert len(store.ai_labels(db, summary["annotator"])) == 4


def test_the_api_key_is_sent_but_never_written_shown_or_stored(db_path, tmp_path):
    def brain(r):
        if r.headers.get("Authorization") != f"Bearer {KEY}":
            return Reply(status=401, json={"error": "bad key"})
        if "q=3" in r.a + r.b:   # a careless proxy that echoes the request's key in its error,
            # right where the error message is cut (200 characters): no piece of it may remain.
            return Reply(status=500, raw=('{"error": "upstream failed' + "." * 157 + " auth: "
                                          + r.headers["Authorization"] + '"}').encode())
        return verdict(0.7)

    with ChatServer(brain) as server:
        done = cli("--db", db_path, "--judge", server.spec(), "--api-key-env", "JUDGE_TEST_KEY",
                   "--max-retries", "0", "--json", "--out", tmp_path / "run",
                   env={"JUDGE_TEST_KEY": KEY})
        assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert done.returncode == 1                        # one task failed
    summary = json.loads(done.stdout)
    assert summary["judged"] == 3 and summary["failed"] == 1
    failures = (tmp_path / "run" / "failures.jsonl").read_text()
    assert "upstream failed" in failures and "auth: Bearer [re" in failures  # (cut at 200)
    for text in (done.stdout, done.stderr):
        assert KEY[:10] not in text
    for path in (tmp_path / "run").rglob("*"):
        assert KEY[:10].encode() not in path.read_bytes(), path
    assert "JUDGE_TEST_KEY" in (tmp_path / "run" / "run.json").read_text()   # only its name
    with store.Store(db_path, read_only=True) as db:
        everything = json.dumps([store.ai_labels(db), store.list_runs(db)], default=str)
        assert KEY not in everything
    assert KEY.encode() not in db_path.read_bytes()
    wal = db_path.with_suffix(".duckdb.wal")
    assert not wal.exists() or KEY.encode() not in wal.read_bytes()


def test_snapshot_mode_never_opens_the_database(db_path, tmp_path):
    with store.Store(db_path) as db, ChatServer(lambda r: verdict(bt(r.a, r.b))) as server:
        # The server owns the database (it is open here) and hands the job a snapshot.
        name = judges.judge_name(judges.parse_judge_spec(server.spec()).public)
        snapshot = judges.write_task_snapshot(store.tasks_lacking_label(db, name), tmp_path / "tasks.jsonl")
        done = cli("--judge", server.spec(), "--tasks", snapshot, "--out", tmp_path / "run", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["judged"] == 4
        rows = [json.loads(line) for line in (tmp_path / "run" / "labels.jsonl").read_text().splitlines()]
        assert store.add_labels(db, rows) == 4         # the owner ingests the folder
        assert store.tasks_lacking_label(db, name) == []
        progress = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert {"judged", "failed", "total"} <= {m["name"] for m in progress}


@pytest.mark.parametrize("args,message", [
    (["--judge", "gpt4"], "--judge: 'gpt4' is not"),
    (["--judge", "openai:http://127.0.0.1:9/v1"], "--judge: openai: expected openai:URL#MODEL"),
    (["--judge", "openai:http://127.0.0.1:9/v1#m", "--api-key-env", "SURELY_UNSET_VAR"],
     "SURELY_UNSET_VAR is not set"),
    (["--judge", "local:x", "--principles", "{bad}"], "bad.md:3: name:"),
    (["--judge", "local:x", "--principle", "speed"], "principle 'speed' is not in"),
    (["--judge", "local:x", "--tie-threshold", "0.7"], "--tie-threshold"),
    (["--judge", "local:x", "--margin-thresholds", "0.5,0.9,0.6"], "--margin-thresholds"),
    (["--judge", "local:x", "--tasks", "{snap}", "--out", "{out}"], "snap.jsonl:2: response_ids:"),
    (["--judge", "local:x", "--tasks", "{good}"], "--tasks: needs --out"),
    ([], "--judge: required"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(db_path, tmp_path, args, message):
    (tmp_path / "bad.md").write_text("## fine\nok\n## not a name\ntext\n")
    task = {"id": "t", "response_ids": ["a", "b"], "messages": [{"role": "user", "content": "q"}],
            "responses": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]}
    (tmp_path / "good.jsonl").write_text(json.dumps(task) + "\n")
    (tmp_path / "snap.jsonl").write_text(json.dumps(task) + "\n" + json.dumps(task | {"response_ids": ["a"]}) + "\n")
    paths = {"bad": tmp_path / "bad.md", "snap": tmp_path / "snap.jsonl",
             "good": tmp_path / "good.jsonl", "out": tmp_path / "out"}
    before = db_path.read_bytes()
    done = cli("--db", db_path, *[a.format(**paths) for a in args])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefstudio judge: ") and message in lines[0]
    assert db_path.read_bytes() == before and not (tmp_path / "out").exists()


def test_rm_judge_scores_with_a_real_reward_model(db_path, tmp_path, tiny_lm):
    """`--judge rm:DIR` with a tiny reward model saved as a run folder: p = sigmoid(r_x - r_y)."""
    import math
    from rewardmodel.model import RewardModel
    from rewardmodel.score import load_scorer
    rm_dir = tmp_path / "rm"
    RewardModel.from_spec(str(tiny_lm), max_length=64).save(rm_dir)
    done = cli("--db", db_path, "--judge", f"rm:{rm_dir}", "--both-orders", "--tie-threshold", "0",
               "--json", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["judged"] == 4
    with store.Store(db_path, read_only=True) as db:
        labels = store.ai_labels(db, f"rm:{rm_dir}")
        tasks = {t["id"]: t for t in store.tasks_lacking_label(db, "nobody")}
    scorer = load_scorer(rm_dir)
    for label in labels:
        task = tasks[label["task_id"]]
        texts = [r["text"] for r in task["responses"]]
        r = scorer.score([task["messages"]] * 2, texts).tolist()
        pair = label["details"]["pairs"][0]
        assert len(pair["orders"]) == 1                     # order cannot matter: asked once
        x_first = pair["x"] == task["response_ids"][0]
        diff = (r[0] - r[1]) if x_first else (r[1] - r[0])
        assert pair["p_x"] == pytest.approx(1 / (1 + math.exp(-diff)), abs=1e-4)
        winner = task["response_ids"][0] if r[0] > r[1] else task["response_ids"][1]
        assert label["ranking"][0] == [winner]
