"""The workspace follows the database (runs/, exports/, uploads/, tmp/ beside --db FILE or
$PREFSTUDIO_DB, for every command), only the studio's first start on the default workspace
adds the sample project, and runs are named by run id as well as by folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import studio_server
from annotate import store
from annotate.runlog import RunLog
from app import main
from cli.common import resolve_run
from test_cli_training_data import labelled_store

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFSTUDIO_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def cli(*args, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], cwd=cwd,
                          env=clean_env(**env), capture_output=True, text=True, timeout=300)


def serve_until_up(cwd: Path, *args) -> None:
    """Start `python app.py ARGS`, wait until the studio listens, stop it."""
    cmd = [sys.executable, str(ROOT / "app.py"), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                return
        raise AssertionError("server did not start:\n" + "".join(lines))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def prompt_count(db_path: Path) -> int:
    with store.Store(db_path, read_only=True) as db:
        return store.counts(db)["prompts"]


def test_serve_puts_the_workspace_beside_db_and_only_the_default_one_gets_the_sample(tmp_path):
    serve_until_up(tmp_path, "serve", "--port", studio_server.free_port(),
                   "--db", "elsewhere/studio.duckdb")
    assert not (tmp_path / "workspace").exists()
    ws = tmp_path / "elsewhere"
    assert {"runs", "exports"} <= {p.name for p in ws.iterdir()}
    assert prompt_count(ws / "studio.duckdb") == 0

    # no --db, no $PREFSTUDIO_DB: ./workspace of the current folder, first start
    serve_until_up(tmp_path, "serve", "--port", studio_server.free_port())
    assert prompt_count(tmp_path / "workspace" / "prefstudio.duckdb") >= 3


def test_a_database_made_by_any_other_command_starts_empty(tmp_path, tiny_policy):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hello", "a story"]))
    assert cli("import", prompts, "--db", "a/db.duckdb", cwd=tmp_path).returncode == 0
    assert prompt_count(tmp_path / "a" / "db.duckdb") == 2
    assert cli("users", "list", "--db", "b/db.duckdb", cwd=tmp_path).returncode == 0
    assert prompt_count(tmp_path / "b" / "db.duckdb") == 0
    assert cli("users", "list", cwd=tmp_path).returncode == 0   # the default database too
    assert prompt_count(tmp_path / "workspace" / "prefstudio.duckdb") == 0
    done = cli("train", "rs", "--prompts", prompts, "--reward", "length", "--model", tiny_policy,
               "--k", 2, "--rounds", 1, "--max-steps", 1, "--max-new-tokens", 3,
               "--db", "c/db.duckdb", "--out", "c/runs/rs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert prompt_count(tmp_path / "c" / "db.duckdb") <= 2   # rs's own prompts, no sample


@pytest.mark.parametrize("how", ["--db", "PREFSTUDIO_DB"])
def test_judge_runs_go_beside_the_database(tmp_path, how):
    db = tmp_path / "team" / "labels.duckdb"
    argv = ["judge", "--judge", "openai:http://127.0.0.1:9/v1#m", "--json"]
    done = (cli(*argv, "--db", db, cwd=tmp_path) if how == "--db"
            else cli(*argv, cwd=tmp_path, PREFSTUDIO_DB=str(db)))
    assert done.returncode == 0, done.stderr
    out = Path(json.loads(done.stdout)["out"])
    assert out.parent == tmp_path / "team" / "runs"
    assert prompt_count(db) == 0 and not (tmp_path / "workspace").exists()


def test_a_run_id_names_its_folder(tmp_path):
    db_path = tmp_path / "ws" / "prefstudio.duckdb"
    under_runs = tmp_path / "ws" / "runs" / "rm-20260101-000000-aaaaaa"
    RunLog(under_runs, "rm", {}, run_id=under_runs.name).finish()
    elsewhere = tmp_path / "models" / "my-rm"
    log = RunLog(elsewhere, "rm", {}, run_id="rm-20260101-000000-bbbbbb")
    log.finish()
    with store.Store(db_path) as db:
        store.ingest_run_dir(db, elsewhere)
    assert resolve_run(under_runs.name, db_path) == str(under_runs)     # runs/ beside the db
    assert resolve_run(log.id, db_path) == str(elsewhere.resolve())     # the store's record
    for unchanged in ("smollm2-135m-instruct", "Qwen/Qwen2.5-0.5B", str(elsewhere), None):
        assert resolve_run(unchanged, db_path) == unchanged


def test_train_dpo_continues_from_a_policy_named_by_run_id(tmp_path, tiny_policy, capsys):
    db_path = tmp_path / "ws" / "prefstudio.duckdb"
    labelled_store(db_path)
    common = ["--db", str(db_path), "--max-steps", "1", "--max-length", "32", "--json"]
    assert main(["train", "sft", "--model", str(tiny_policy), "--out", str(tmp_path / "sft"),
                 *common]) == 0
    sft_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"]
    assert main(["train", "dpo", "--model", sft_id, "--out", str(tmp_path / "dpo"), *common]) == 0
    run = json.loads((tmp_path / "dpo" / "run.json").read_text())
    assert run["parents"] == [sft_id]
    assert Path(run["config"]["model"]) == (tmp_path / "sft").resolve()
    assert main(["train", "rs", "--rm", "no-such-run", "--prompts", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "rs"), "--db", str(db_path)]) == 2
    assert "--rm no-such-run: no such run folder, run id or ensemble file" in capsys.readouterr().err
