"""``prefstudio generate --model openai:URL#MODEL``: candidates from a real local chat-completions
server (tests/chat_server.py) that does or does not do ``n``, fails (500, 429 with Retry-After,
a dropped connection), answers slowly, or is killed mid-run; the key never written down."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from annotate import store
from annotate.runlog import read_run
from chat_server import ChatServer, Reply, completion
from policy.candidates import GenerateConfig, generate_candidates
from policy.served import GenerationFailed, ServerSettings

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-5e6f7a8b9c0d1e2f3a4b"
PROMPTS = [f"Question number {i}: why?" for i in range(5)]


def answers(r, n_ok=True) -> Reply:
    """n answers (or one, for a server without n) naming the prompt, temperature, seed, index."""
    n = r.body.get("n", 1) if n_ok else 1
    q = r.body["messages"][-1]["content"]
    return completion([f"{q} t={r.body['temperature']} s={r.body.get('seed')} i={i}"
                       for i in range(n)])


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "app.py", "generate", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def prompts_file(tmp_path, prompts=PROMPTS) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def stored(db_path) -> list[dict]:
    with store.Store(db_path, read_only=True) as db:
        return db.query("SELECT r.text, r.model, r.gen_params, p.messages FROM responses r "
                        "JOIN prompts p ON p.id = r.prompt_id")


def messages(prompts=PROMPTS) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in prompts]


def fast(**kw) -> ServerSettings:
    return ServerSettings(backoff=0.01, **kw)


def test_store_gets_k_answers_per_prompt_with_gen_params_and_the_key_stays_out(tmp_path):
    seen_auth = []

    def brain(r):
        seen_auth.append(r.headers.get("Authorization"))
        reply = answers(r)
        if r.n == 0:    # a server that repeats what it was sent: the key must not be stored
            reply.json["choices"][0]["message"]["content"] += " " + r.headers["Authorization"]
        return reply

    db = tmp_path / "ws" / "ws.duckdb"
    with ChatServer(brain) as server:
        spec = f"openai:{server.url}?api-key=urlsecret42#served-m"
        args = ["--db", db, "--model", spec, "--k", 4, "--temperature", "0.7", "--prompts",
                prompts_file(tmp_path), "--api-key-env", "GEN_KEY", "--json"]
        done = cli(*args, env={"GEN_KEY": KEY})
        assert done.returncode == 0, done.stderr
        again = cli(*args, env={"GEN_KEY": KEY})
        assert again.returncode == 0, again.stderr
        # one request with n=4 per prompt; the second run asks nothing
        assert len(server.requests) == len(PROMPTS)
        assert all(r.body["n"] == 4 and r.body["model"] == "served-m" for r in server.requests)
    assert set(seen_auth) == {f"Bearer {KEY}"}
    assert "nothing to do" in again.stdout or json.loads(again.stdout)["prompts"] == 0
    rows = stored(db)
    assert len(rows) == 4 * len(PROMPTS)
    public = f"openai:{server.url}#served-m"
    assert {r["model"] for r in rows} == {public}
    params = json.loads(rows[0]["gen_params"])
    assert params | {"seed": 0} == {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 256,
                                    "seed": 0, "n": 4, "served_model": "served-m", "finished": True}
    with store.Store(db, read_only=True) as s:
        assert len(store.list_tasks(s)) == len(PROMPTS)
    # neither the key nor the URL's secret anywhere: store file, run folders, output
    for path in [p for p in db.parent.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        assert KEY.encode() not in data and b"urlsecret42" not in data, path
    assert KEY not in done.stdout + done.stderr


@pytest.mark.parametrize("without_n", ["fewer choices", "400"])
def test_a_server_without_n_is_asked_one_sample_per_request(tmp_path, without_n):
    def brain(r):
        if without_n == "400" and r.body.get("n", 1) > 1:
            return Reply(400, {"error": {"message": "n must be 1"}})
        return answers(r, n_ok=False)

    config = GenerateConfig(model="", k=3, temperatures=[1.0], server=fast(concurrency=1))
    with ChatServer(brain) as server:
        config.model = server.spec("m")
        lines, summary = generate_candidates(config, messages(), tmp_path / "run", progress=False)
        asked_n = [r for r in server.requests if r.body.get("n", 1) > 1]
        # only the first request tried n: the fallback is remembered for the run
        assert len(asked_n) == 1 and asked_n[0].n == 0
        # the first prompt: the n request, then the samples it did not give (its one answer is
        # kept when the server answered fewer choices); every other prompt: 3 singles
        singles_first = 3 if without_n == "400" else 2
        assert len(server.requests) == 1 + singles_first + 3 * (len(PROMPTS) - 1)
    assert summary["responses"] == 3 * len(PROMPTS)
    texts = [r["text"] for line in lines for r in line["responses"]]
    assert len(set(texts)) == 15 and {"s=0", "s=1", "s=2"} <= {t.split()[-2] for t in texts}


def test_500_429_and_dropped_connections_are_retried_and_slow_replies_waited_for(tmp_path):
    trouble = {0: Reply(500, {"error": "busy"}), 1: Reply(429, {"error": "slow down"},
                                                         headers={"Retry-After": "0"}),
               2: Reply(drop=True)}

    def brain(r):
        return trouble.get(r.n) or Reply(**{**answers(r).__dict__, "delay": 0.2})

    config = GenerateConfig(model="", k=2, temperatures=[0.5], server=fast(concurrency=1))
    with ChatServer(brain) as server:
        config.model = server.spec("m")
        lines, summary = generate_candidates(config, messages(), tmp_path / "run", progress=False)
        assert len(server.requests) == len(PROMPTS) + 3
    assert summary["responses"] == 2 * len(PROMPTS) and summary["requests"] == len(PROMPTS) + 3
    records = [json.loads(x) for x in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(PROMPTS) and all(r["gen_params"]["n"] == 2 for r in records)


def test_retries_are_bounded_and_a_final_failure_names_the_prompt_and_keeps_the_rest(tmp_path):
    def brain(r):
        if "number 2" in r.body["messages"][-1]["content"]:
            return Reply(503, {"error": f"model overloaded (key {r.headers['Authorization']})"})
        return answers(r)

    os.environ["GEN_TEST_KEY"] = KEY
    config = GenerateConfig(model="", k=2, temperatures=[0.5],
                            server=fast(concurrency=1, max_retries=2, api_key_env="GEN_TEST_KEY"))
    with ChatServer(brain) as server:
        config.model = server.spec("m")
        with pytest.raises(GenerationFailed) as failed:
            generate_candidates(config, messages(), tmp_path / "run", progress=False)
        # prompts 1 and 2 once each, prompt 3 three times (2 retries); nothing after it
        assert len(server.requests) == 2 + 3
    message = str(failed.value)
    assert "\n" not in message and "prompt 3 of 5" in message and "number 2" in message
    assert "HTTP 503" in message and "model overloaded" in message and KEY not in message
    run = read_run(tmp_path / "run")
    assert run["status"] == "failed" and KEY not in json.dumps(run)
    kept = (tmp_path / "run" / "responses.jsonl").read_text().splitlines()
    assert len(kept) == 4


def test_concurrent_requests_never_exceed_the_bound(tmp_path):
    config = GenerateConfig(model="", k=4, server=fast(concurrency=3))   # 4 temperatures
    with ChatServer(lambda r: Reply(**{**answers(r).__dict__, "delay": 0.1})) as server:
        config.model = server.spec("m")
        generate_candidates(config, messages(), tmp_path / "run", progress=False)
        assert len(server.requests) == 4 * len(PROMPTS)
        assert 1 < server.max_in_flight <= 3


def test_a_failed_run_resumed_asks_only_for_the_missing_prompts_store_and_file(tmp_path):
    broken = {"on": True}

    def brain(r):
        if broken["on"] and "number 3" in r.body["messages"][-1]["content"]:
            return Reply(500, {"error": "down"})
        return answers(r)

    db, out = tmp_path / "ws" / "ws.duckdb", tmp_path / "cands.jsonl"
    with ChatServer(brain) as server:
        base = ["--model", server.spec("m"), "--k", 2, "--temperature", "0.9", "--prompts",
                prompts_file(tmp_path), "--concurrency", 1, "--max-retries", 1, "--json"]
        for target in (["--db", db], ["--out", out]):
            before = len(server.requests)
            broken["on"] = True
            failed = cli(*base, *target)
            assert failed.returncode == 2
            assert failed.stderr.count("\n") == 1 and "prompt 4 of 5" in failed.stderr
            assert "HTTP 500" in failed.stderr
            assert len(server.requests) - before == 3 + 2       # 3 fine, 1 retried, stop
            broken["on"] = False
            resumed = cli(*base, *target)
            assert resumed.returncode == 0, resumed.stderr
            assert len(server.requests) - before == 5 + 2       # only prompts 4 and 5 again
    assert len(stored(db)) == 2 * len(PROMPTS)
    with store.Store(db, read_only=True) as s:
        assert len(store.list_tasks(s)) == len(PROMPTS)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(line["prompt"][-1]["content"] for line in lines) == PROMPTS


def test_a_killed_run_resumed_asks_only_for_what_it_had_not_received(tmp_path):
    release = threading.Event()

    def brain(r):
        if r.n == 2:          # the third prompt hangs until the client is killed
            release.wait(60)
            return Reply(500, {"error": "gone"})
        return answers(r)

    db = tmp_path / "ws" / "ws.duckdb"
    with ChatServer(brain) as server:
        args = ["--db", db, "--model", server.spec("m"), "--k", 3, "--temperature", "0.8",
                "--prompts", prompts_file(tmp_path), "--concurrency", 1, "--task", "ranking"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "app.py", "generate", *map(str, args)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                files = list((db.parent / "runs").glob("*/responses.jsonl"))
                if len(server.requests) >= 3 and files and \
                        len(files[0].read_text().splitlines()) == 6:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            release.set()
        resumed = cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        # the first run's 3 requests, then only prompts 3, 4 and 5
        assert len(server.requests) == 3 + 3
        assert [re.search(r"number (\d)", r.body["messages"][-1]["content"]).group(1)
                for r in server.requests[3:]] == ["2", "3", "4"]
    assert len(stored(db)) == 3 * len(PROMPTS)
    with store.Store(db, read_only=True) as s:
        assert len(store.list_tasks(s)) == len(PROMPTS)   # the killed run's groups too
        runs = {r["status"] for r in store.list_runs(s) if r["kind"] == "generate"}
    assert runs == {"failed", "done"}


def test_bad_served_options_exit_2_with_one_line(tmp_path):
    db = tmp_path / "ws" / "ws.duckdb"
    for args, why in [(["--model", "openai:ftp://x#m"], "is not an http(s) URL"),
                      (["--model", "openai:http://127.0.0.1:9/v1"], "expected openai:URL#MODEL"),
                      (["--model", "openai:http://127.0.0.1:9/v1#m", "--concurrency", "0"],
                       "--concurrency"),
                      (["--model", "openai:http://127.0.0.1:9/v1#m", "--api-key-env", "NO_SUCH_VAR_X"],
                       "NO_SUCH_VAR_X is not set")]:
        done = cli("--db", db, *args, "--prompts", prompts_file(tmp_path))
        assert done.returncode == 2 and why in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not db.exists()
