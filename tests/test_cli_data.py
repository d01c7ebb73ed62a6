"""The data commands as a user runs them: real processes, exit codes, stdout and stderr."""
import json
import os
import subprocess
import sys
from pathlib import Path

from annotate import store
from formats_helpers import full_dump, write_jsonl

APP = Path(__file__).resolve().parent.parent / "app.py"


def cli(*args, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFSTUDIO_")}
    return subprocess.run([sys.executable, str(APP), *map(str, args)], input=stdin, text=True,
                          capture_output=True, cwd=cwd, env=env, timeout=300)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_import_export_and_their_errors(tmp_path):
    db_path = tmp_path / "ws.duckdb"
    good = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q1", "chosen": "A", "rejected": "B", "margin": 1},
                                                  {"prompt": "Q2", "chosen": "C", "rejected": "D"}])
    run = cli("import", good, "--db", db_path)
    assert run.returncode == 0, run.stderr
    assert one_line(run.stdout) == ("imported prefs.jsonl as pairs (2 rows): 2 prompts, 4 responses, "
                                    "2 tasks, 2 labels new")
    run = cli("import", good, "--db", db_path, "--json")
    result = json.loads(one_line(run.stdout))
    assert (run.returncode, result["labels"], result["format"]) == (0, 0, "pairs")

    with store.Store(db_path) as db:
        before = full_dump(db)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q3", "chosen": "E", "rejected": "F"},
                                               {"prompt": "Q4", "chosen": "G"}])
    run = cli("import", bad, "--db", db_path)
    assert run.returncode == 2 and run.stdout == ""
    assert one_line(run.stderr) == f"prefstudio import: {bad}:2: rejected: missing"
    run = cli("import", bad, "--db", db_path, "--format", "rankings")
    assert run.returncode == 2 and one_line(run.stderr).endswith("bad.jsonl:1: responses: missing")
    with store.Store(db_path) as db:
        assert full_dump(db) == before

    run = cli("export", "pairs", "--db", db_path, "--out", tmp_path / "out" / "pairs.csv")
    assert run.returncode == 0, run.stderr
    assert one_line(run.stdout) == f"wrote 2 pairs rows to {tmp_path / 'out' / 'pairs.csv'}"
    header = (tmp_path / "out" / "pairs.csv").read_text().splitlines()[0]
    assert header.startswith("prompt,chosen,rejected,margin,margin_level,soft_prob,source,votes_chosen")
    run = cli("export", "rankings", "--db", db_path, "--out", tmp_path / "r.parquet", "--json")
    assert json.loads(one_line(run.stdout))["rows"] == 2

    run = cli("export", "pairs", "--db", db_path, "--out", tmp_path / "pairs.xlsx")
    assert run.returncode == 2 and "unknown file type" in one_line(run.stderr)
    run = cli("export", "votes", "--db", db_path, "--out", tmp_path / "v.jsonl")
    assert run.returncode == 2 and "invalid choice: 'votes'" in run.stderr   # argparse


def test_users_add_list_roles_and_errors(tmp_path):
    db_path = tmp_path / "ws.duckdb"
    run = cli("users", "add", "alice", "--role", "annotator", "--password-stdin", "--db", db_path,
              stdin="correct horse\n")
    assert (run.returncode, one_line(run.stdout)) == (0, "added annotator alice")
    run = cli("users", "add", "alice", "--role", "admin", "--password-stdin", "--db", db_path, stdin="whatever1\n")
    assert run.returncode == 2 and one_line(run.stderr) == "prefstudio users: user 'alice' already exists"
    run = cli("users", "add", "bob", "--role", "annotator", "--password-stdin", "--db", db_path, stdin="short\n")
    assert run.returncode == 2 and one_line(run.stderr) == "prefstudio users: passwords need at least 8 characters"
    run = cli("users", "add", "bob", "--password-stdin", "--db", db_path, stdin="long enough\n")
    assert run.returncode == 2 and "needs NAME and --role" in one_line(run.stderr)
    run = cli("users", "add", "bob", "--role", "owner", "--password-stdin", "--db", db_path, stdin="long enough\n")
    assert run.returncode == 2 and "invalid choice: 'owner'" in run.stderr
    run = cli("users", "add", "bad name!", "--role", "admin", "--password-stdin", "--db", db_path,
              stdin="long enough\n")
    assert run.returncode == 2 and "user names are" in one_line(run.stderr)
    run = cli("users", "add", "root", "--role", "admin", "--password-stdin", "--db", db_path, stdin="long enough\n")
    assert run.returncode == 0

    run = cli("users", "list", "--db", db_path)
    assert run.stdout.splitlines() == ["alice\tannotator", "root\tadmin"]
    run = cli("users", "set-role", "alice", "--role", "admin", "--db", db_path, "--json")
    assert json.loads(one_line(run.stdout)) == {"user": "alice", "role": "admin"}
    run = cli("users", "list", "--db", db_path, "--json")
    assert [(u["name"], u["role"]) for u in json.loads(one_line(run.stdout))["users"]] == \
        [("alice", "admin"), ("root", "admin")]
    with store.Store(db_path) as db:
        assert store.verify_user(db, "alice", "correct horse") == "admin"
        assert store.verify_user(db, "alice", "wrong") is None


def test_a_busy_database_is_one_line_naming_the_owner(tmp_path):
    db_path = tmp_path / "ws.duckdb"
    store.Store(db_path).close()
    root = str(Path(__file__).resolve().parent.parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r}); from annotate import store; "
                               f"db = store.Store({str(db_path)!r}); print('ready', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        good = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
        run = cli("import", good, "--db", db_path)
        assert run.returncode == 2
        line = one_line(run.stderr)
        assert line.startswith(f"prefstudio import: {db_path} is open in another process (PID {holder.pid})")
    finally:
        holder.communicate("\n", timeout=60)
