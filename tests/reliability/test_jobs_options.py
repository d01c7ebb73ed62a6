"""Job options are read by the CLI's own parser: no spelling of a reserved option gets through.

argparse takes any unambiguous prefix of an option (``--ou`` is ``--out``) and ``--opt=value``;
a check of the literal flag names let ``--ou /tmp/x`` write a run folder outside the
workspace and ``--da FILE`` train on any file the server can read (issue 12).
"""
import os
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from annotation_data import seed_tasks, snapshot
from annotate.ui.forms import build_argv
from cli import parse_command
import studio_server

ESCAPED = "/tmp/prefstudio-escaped-run"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = studio_server.start(tmp_path_factory.mktemp("job-options"),
                              seed=lambda db: seed_tasks(db, pairwise=2, ranking=1))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def admin(server):
    return server.client("admin1")


SMUGGLED = [
    # (kind, options, the spelling named in the refusal, the option it would set)
    ("rm", f"--ou {ESCAPED} --max-steps 1 --base minilm", "--ou", "--out"),
    ("rm", f"--o {ESCAPED}", "--o", "--out"),
    ("rm", f"--out={ESCAPED}", "--out", "--out"),
    ("rm", f"--ou={ESCAPED}", "--ou", "--out"),
    ("sft", "--da /etc/passwd", "--da", "--data"),
    ("dpo", "--dat=/etc/passwd", "--dat", "--data"),
    ("rm", "--data /etc/passwd", "--data", "--data"),
    ("rm", "--db /elsewhere.duckdb", "--db", "--db"),
    ("rm", "--db=/elsewhere.duckdb", "--db", "--db"),
    ("rs", "--pro /etc/passwd", "--pro", "--prompts"),
    ("ppo", "--promp=/etc/passwd", "--promp", "--prompts"),
    ("rloo", "--prompts /etc/passwd", "--prompts", "--prompts"),
    ("rm", "--js", "--js", "--json"),
    ("rm", "--json", "--json", "--json"),
]


@pytest.mark.parametrize("kind, options, spelled, sets", SMUGGLED)
def test_every_spelling_of_a_reserved_option_is_refused(server, admin, kind, options, spelled, sets):
    before = snapshot(server.db)
    with pytest.raises(AppError) as refused:
        admin.predict(kind, {"options": options}, api_name="/start_job")
    named = "" if spelled == sets else f" (as {spelled})"
    assert str(refused.value) == f"options: {sets}{named} is set by the studio itself"
    assert snapshot(server.db) == before
    assert not (server.workspace / "runs").exists() or not any((server.workspace / "runs").iterdir())
    assert not os.path.exists(ESCAPED)


@pytest.mark.parametrize("options, message", [
    ("--no-such-option 1", "options: unrecognized arguments: --no-such-option 1"),
    ("--d /x", "options: ambiguous option: --d could match --data, --db"),
    ("--max-steps many", "options: argument --max-steps: invalid int value: 'many'"),
    ("--help", "options: help and exit are not options here"),
    ("extra-word", "options: unrecognized arguments: extra-word"),
    ("--base 'unclosed", "options: No closing quotation"),
])
def test_a_bad_option_is_refused_with_one_line(server, admin, options, message):
    before = snapshot(server.db)
    with pytest.raises(AppError) as refused:
        admin.predict("rm", {"options": options}, api_name="/start_job")
    assert str(refused.value) == message
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)
    assert snapshot(server.db) == before
    assert server.client("ann").predict(api_name="/progress")["left"] == 3   # still serving


def test_valid_options_pass_as_the_job_will_read_them():
    argv = build_argv("dpo", {"options": "--max-st=3 --beta 0.2 --lora-r 4"}, parse_command,
                      Path("/nonexistent"), {"data": "/w/data.jsonl", "out": "/w"})
    assert argv[-5:] == ["--max-st=3", "--beta", "0.2", "--lora-r", "4"]
    parsed = parse_command(argv)
    assert (parsed.max_steps, parsed.beta, parsed.lora_r, parsed.out) == (3, 0.2, 4, "/w")
