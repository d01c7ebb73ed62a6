"""A judge's API key, and anything that looks like a credential, is never stored.

A real chat-completions server on 127.0.0.1 (tests/chat_server.py) echoes the key it was sent:
in the judge's rationale and answer, in a retried 500 page, in a 400 error. `prefstudio judge`
runs against it; then the database (every table, and the file's bytes), the run folder and
the command's output are searched for the key. A key that breaks the request itself (a
trailing newline from a key file) makes httpx quote the header in its error: that message is
stored redacted too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotate import judges, store
from annotate.judges import JudgeConfig, JudgeError, parse_judge_spec
from annotate.judges.redact import REDACTED, redact, redact_text
from annotate.runlog import RunLog, read_run
from chat_server import ChatServer, Reply, verdict
from judge_helpers import add_task

ROOT = Path(__file__).resolve().parents[2]
SECRET_PART = "7Qm2vX9pLr4TzW8nKd3Y"
KEY = "sk-live-" + SECRET_PART
# someone else's credentials, quoted by a model or a proxy: redacted because of their shape
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlMTIz"
BASIC = "dXNlcjpwYXNzd29yZDEyMw=="


def leaks(text: str) -> list[str]:
    return [s for s in (SECRET_PART[:10], SECRET_PART[-10:], JWT[:16], BASIC[:12]) if s in text]


def echoing_judge(r):
    """The judge's answers quote the Authorization header it received, several ways."""
    sent = r.headers.get("Authorization", "")
    if "q=3" in r.a + r.b:    # a proxy error page with the request's headers (retried, then failed)
        return Reply(status=502, raw=json.dumps({"error": "bad gateway", "request_headers": {
            "Authorization": sent}}).encode())
    if "q=4" in r.a + r.b:    # an upstream that names the key it refused
        return Reply(status=400, json={"error": {"message": f"key {sent.split()[-1]} is revoked"}})
    text = (f"The caller sent {sent!r} (that is, key {KEY}); the docs use "
            f"Authorization: Basic {BASIC} and Bearer {JWT}. Response A is clearer.\nVerdict: A")
    return verdict(0.8, text=text, leading=text[:-1])


def all_tables(db_path: Path) -> str:
    with store.Store(db_path, read_only=True) as db:
        tables = [r["table_name"] for r in db.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")]
        return json.dumps({t: db.query(f"SELECT * FROM {t}") for t in tables}, default=str)


def test_a_judge_that_echoes_the_key_is_stored_redacted(tmp_path):
    db_path = tmp_path / "ws" / "prefstudio.duckdb"
    with store.Store(db_path) as db:
        for i in range(6):
            add_task(db, f"question {i}", [f"q={i} answer", "q=0.5 other"])
    out = tmp_path / "run"
    with ChatServer(echoing_judge) as server:
        done = subprocess.run(
            [sys.executable, "app.py", "judge", "--db", db_path, "--judge", server.spec(),
             "--api-key-env", "JUDGE_SECRET_KEY", "--rationale-first", "--max-retries", "1",
             "--json", "--out", out],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT), "JUDGE_SECRET_KEY": KEY})
        assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    summary = json.loads(done.stdout)
    assert (summary["judged"], summary["failed"]) == (4, 2), done.stderr

    with store.Store(db_path, read_only=True) as db:
        labels = db.query("SELECT rationale, details FROM labels WHERE annotator = ?",
                          [summary["annotator"]])
    assert len(labels) == 4
    for label in labels:   # the rationale keeps its words, loses the secrets
        assert "Response A is clearer" in label["rationale"]
        assert label["rationale"].count(REDACTED) == 4, label["rationale"]
        assert "Bearer [redacted]" in label["rationale"] and "Basic [redacted]" in label["rationale"]
        assert REDACTED in label["details"] and "Response A is clearer" in label["details"]
    failures = (out / "failures.jsonl").read_text()
    assert "bad gateway" in failures and "is revoked" in failures and REDACTED in failures

    assert leaks(all_tables(db_path)) == []
    assert SECRET_PART[:10].encode() not in db_path.read_bytes()
    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert leaks(path.read_text(errors="replace")) == [], path
    assert leaks(done.stdout + done.stderr) == []


def test_a_request_error_that_quotes_the_key_is_stored_redacted(db, tmp_path, monkeypatch):
    """A key read from a file with its newline: httpx refuses the header and quotes it,
    escaped, in its error; the failure, the run log and the run are stored without it."""
    monkeypatch.setenv("JUDGE_SECRET_KEY", KEY + "\n")
    add_task(db, "question", ["q=1 answer", "q=0 other"])
    with ChatServer(lambda r: verdict(0.8)) as server:
        spec = parse_judge_spec(server.spec())
        config = JudgeConfig(judge=spec.public, api_key_env="JUDGE_SECRET_KEY", max_retries=0,
                             max_consecutive_failures=1)
        judge = judges.build_judge(spec, config)
        try:
            summary = judges.judge_store(db, judge, config, tmp_path / "run", progress=False)
        finally:
            judge.close()
        assert server.requests == []        # the request never left
    assert summary["failed"] == 1
    run = read_run(tmp_path / "run")
    assert "Illegal header value" in run["error"] and REDACTED in run["error"]
    for path in [p for p in (tmp_path / "run").rglob("*") if p.is_file()]:
        assert leaks(path.read_text()) == [], path
    assert leaks(json.dumps([store.list_runs(db), store.ai_labels(db)], default=str)) == []


class CrashingJudge(judges.Judge):
    """A back end that dies with the key in its exception (say, a client library's repr of
    its own headers): the job's run log and run.json get the traceback redacted."""
    secrets = (KEY,)

    def judge(self, comparisons):
        raise RuntimeError(f"client state: {{'headers': {{'authorization': 'Bearer {KEY}'}}}}")


def test_a_judge_crash_is_logged_redacted(tmp_path):
    config = JudgeConfig(judge="test:crash")
    task = {"id": "t1", "response_ids": ["r1", "r2"], "messages": [{"role": "user", "content": "q"}],
            "responses": [{"id": "r1", "text": "one"}, {"id": "r2", "text": "two"}]}
    with pytest.raises(RuntimeError):
        judges.run_judge([task], CrashingJudge(), config, RunLog(tmp_path / "run", "judge", {}),
                         progress=False)
    run = read_run(tmp_path / "run")
    assert run["status"] == "failed" and REDACTED in run["error"]
    assert "Traceback" in (tmp_path / "run" / "log.txt").read_text()
    for path in [p for p in (tmp_path / "run").rglob("*") if p.is_file()]:
        assert leaks(path.read_text()) == [], path


@pytest.mark.parametrize("text,expected", [
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
    (f'{{"authorization": "Bearer {JWT}"}}', '{"authorization": "Bearer [redacted]"}'),
    (f"authorization={BASIC}&x=1", "authorization=[redacted]&x=1"),
    (f"-H 'Authorization: Basic {BASIC}'", "-H 'Authorization: Basic [redacted]'"),
    (f"token: bearer {JWT} end", "token: bearer [redacted] end"),
    ("use sk-proj-abcdefghijklmnop1234 here", "use [redacted] here"),
    ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz", "HF_TOKEN=[redacted]"),
    # prose stays prose
    ("the bearer of bad news", "the bearer of bad news"),
    ("a Bearer token goes in the Authorization header", "a Bearer token goes in the Authorization header"),
    ("skip sk-short and hf_short", "skip sk-short and hf_short"),
])
def test_credential_shapes_are_redacted_and_prose_is_not(text, expected):
    assert redact_text(text) == expected


def test_the_key_is_redacted_in_every_form_text_shows_it():
    key = "k3y with space/and\"quote"
    forms = [key, json.dumps(key), repr(key), "k3y%20with%20space%2Fand%22quote", f"[{key}]"]
    for form in forms:
        assert "k3y" not in redact_text(f"said {form} twice", [key]), form
    assert redact({"a": [f"x {key}"], key: 1}, [key]) == {"a": [f"x {REDACTED}"], REDACTED: 1}
    assert redact_text("abc abc", ["abc"]) == "abc abc"     # too short to be a secret


def test_a_judge_error_keeps_its_kind_and_loses_the_key():
    judge = CrashingJudge()
    err = judge.redacted(JudgeError("http", f"HTTP 401: bad key {KEY}"))
    assert err.kind == "http" and err.message == f"HTTP 401: bad key {REDACTED}"
    other = judge.redacted(ValueError(f"Authorization: Bearer {KEY}"))
    assert other.kind == "error" and KEY not in str(other)
