"""Job forms: every kind's form builds a command the CLI itself accepts, from the CLI's own
options; what the studio sets itself, or what is not an option of the kind, is refused."""
from pathlib import Path

import pytest

from annotate import store
from annotate.ui import forms
from annotate.ui.jobs import KINDS, JobRunner
from cli import parse_command

# what a form needs besides its preset (the fields with no sensible default)
REQUIRED = {"rs": {"rm": "rm-run"}, "ppo": {"rm": "rm-run"}, "rloo": {"rm": "rm-run"},
            "judge": {"judge": "rm:rm-run"}, "eval_rm": {"model": "rm-run"},
            "eval_policy": {"model": "smollm2-135m-instruct", "rm": "rm-run"},
            "queue_order": {"order": "uncertainty", "rm": "rm-run"}}


@pytest.fixture
def runner(db, tmp_path):
    return JobRunner(db, tmp_path / "workspace", parse_command=parse_command)


def test_the_kinds_of_the_runner_and_of_the_forms_are_the_same():
    assert set(KINDS) == set(forms.COMMANDS) == set(forms.FIELDS) == {
        "rm", "sft", "rs", "dpo", "ppo", "rloo", "generate", "judge", "eval_rm", "eval_policy",
        "queue_order"}


@pytest.mark.parametrize("kind", sorted(forms.COMMANDS))
@pytest.mark.parametrize("preset", sorted(forms.PRESETS))
def test_each_form_builds_a_command_the_cli_accepts(runner, kind, preset):
    fields = forms.form(kind, parse_command.options)
    # every field but the prompt set is an option of the kind's command, with its flag
    assert all(f["flag"] for f in fields if f["dest"] != "prompts")
    params = {**forms.preset(kind, preset), **REQUIRED.get(kind, {})}
    folder = runner.runs / "r1"
    argv = runner.argv(kind, params, folder)
    parsed = parse_command(argv)          # exactly as `prefstudio ARGV` would read it
    assert list(argv[:len(forms.COMMANDS[kind])]) == list(forms.COMMANDS[kind])
    for dest, value in params.items():
        if value is not None:
            assert str(getattr(parsed, dest)) == str(value), dest
    # the run folder and the snapshot are the studio's
    out = parsed.run_dir if kind == "generate" else parsed.out
    assert out == str(folder)
    reads = {"labels": "data", "prompts": "prompts", "tasks": "tasks",
             "round_tasks": "tasks"}[KINDS[kind].reads]
    assert getattr(parsed, reads) == str(folder / f"{reads}.jsonl")


def test_the_default_reward_model_base_is_minilm():
    assert forms.preset("rm")["base"] == "minilm"
    fields = {f["dest"]: f for f in forms.form("rm", parse_command.options)}
    assert fields["base"]["value"] == "minilm" and fields["max_steps"]["value"] == 20


def test_a_finished_run_is_named_by_id_and_given_to_the_job_by_folder(runner):
    folder = runner.runs / "rm-20260101-000000-abcdef"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"id": "rm-20260101-000000-abcdef", "kind": "rm"}')
    argv = runner.argv("judge", {"judge": "rm:rm-20260101-000000-abcdef"}, runner.runs / "j")
    assert argv[argv.index("--judge") + 1] == f"rm:{folder.resolve()}"
    argv = runner.argv("ppo", {"rm": "rm-20260101-000000-abcdef", "model": "smollm2-135m-instruct"},
                       runner.runs / "p")
    assert argv[argv.index("--rm") + 1] == str(folder.resolve())


@pytest.mark.parametrize("kind, params, message", [
    ("rm", {"out": "/tmp/x"}, "params: out is set by the studio itself"),
    ("rm", {"data": "/etc/passwd"}, "params: data is set by the studio itself"),
    ("generate", {"run_dir": "/tmp/x"}, "params: run_dir is set by the studio itself"),
    ("rm", {"bogus": 1}, "params: 'bogus' is not an option of train rm"),
    ("rm", {"beta": 0.1}, "params: 'beta' is not an option of train rm"),
    ("rm", {"options": "--beta 0.1"}, "options: --beta is not an option of train rm"),
    ("judge", {"judge": "rm:x", "options": "--tas /etc/passwd"},
     "options: --tasks (as --tas) is set by the studio itself"),
    ("generate", {"options": "--run-d /tmp/x"}, "options: --run-dir (as --run-d) is set by the studio itself"),
    ("eval_policy", {"model": "m", "rm": "r", "options": "--ou /tmp/x"},
     "options: --out (as --ou) is set by the studio itself"),
    ("generate", {"options": "--db=/x.duckdb"}, "options: --db is set by the studio itself"),
    ("judge", {"options": "--report"}, "options: --report is set by the studio itself"),
    ("judge", {}, "judge: choose judge"),
    ("ppo", {}, "ppo: choose rm or reward"),
    ("rm", {"max_steps": "many"}, "options: argument --max-steps: invalid int value: 'many'"),
    ("bake", {}, "job kind must be one of"),
])
def test_refused_params_start_nothing(db, runner, kind, params, message):
    with pytest.raises(store.StoreError) as refused:
        runner.start(kind, params)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    assert store.list_runs(db) == [] and not runner.runs.exists()


def test_a_prompt_set_with_no_prompts_is_refused_before_queueing(db, runner):
    with pytest.raises(store.StoreError, match="the set 'all' has no prompts"):
        runner.start("generate", {"model": "smollm2-135m-instruct", "prompts": "all"})
    with pytest.raises(store.StoreError, match="no held-out prompts yet"):
        runner.start("eval_policy", {"model": "m", "rm": "r", "prompts": "held_out"})
    assert store.list_runs(db) == []
