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
            "rest": {"rm": "rm-run"},
            "judge": {"judge": "rm:rm-run"}, "eval_rm": {"model": "rm-run"},
            "eval_policy": {"model": "smollm2-135m-instruct", "rm": "rm-run"},
            "queue_order": {"order": "uncertainty", "rm": "rm-run"}}


@pytest.fixture
def runner(db, tmp_path):
    return JobRunner(db, tmp_path / "workspace", parse_command=parse_command)


def test_the_kinds_of_the_runner_and_of_the_forms_are_the_same():
    assert set(KINDS) == set(forms.COMMANDS) == set(forms.FIELDS) == {
        "rm", "sft", "rs", "dpo", "ppo", "rloo", "rrhf", "generate", "judge", "eval_rm",
        "eval_policy", "cai", "rest", "queue_order"}


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


def test_the_reward_model_form_is_the_default_command():
    """The form shows `train rm`'s own recipe (MiniLM, two epochs), not a few-step toy run."""
    from rewardmodel.train import RMConfig
    defaults = RMConfig()
    fields = {f["dest"]: f for f in forms.form("rm", parse_command.options)}
    assert fields["base"]["value"] == defaults.base == "minilm"
    assert fields["max_steps"]["value"] is None     # blank: epochs decide
    for dest in ("batch_size", "lr", "lora_r"):
        assert fields[dest]["value"] == getattr(defaults, dest), dest


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


def test_the_cai_and_rest_forms_and_their_presets(runner, tmp_path):
    rest = {f["dest"]: f for f in forms.form("rest", parse_command.options)}
    assert rest["thresholds"]["value"] == "0.5,0.7,0.9" and rest["rounds"]["value"] == 1
    argv = runner.argv("rest", {**forms.preset("rest"), "rm": "rm-run"}, runner.runs / "r")
    assert argv[:2] == ["train", "rs"] and argv[argv.index("--thresholds") + 1] == "0.5,0.7,0.9"
    cai = {f["dest"]: f for f in forms.form("cai", parse_command.options)}
    assert cai["revisions"]["value"] == 1 and cai["principles"]["flag"] == "--principles"
    assert forms.preset("cai", "quality")["revisions"] == 2
    argv = runner.argv("cai", forms.preset("cai"), runner.runs / "c")
    assert argv[:2] == ["train", "cai"] and "--rm" not in argv
    with pytest.raises(store.StoreError, match="'thresholds' is not an option of train cai"):
        runner.argv("cai", {"thresholds": "0.5"}, runner.runs / "c")
    # an SL-CAI model is a policy to start the next stage from
    runs = [{"id": "cai-1", "kind": "cai", "status": "done"}]
    assert "cai-1" in forms.model_choices(runs, "policy", tmp_path)


def test_a_local_model_folder_is_picked_by_name_and_given_to_the_job_by_folder(runner):
    models = runner.workspace / "models"
    (models / "tiny-lm").mkdir(parents=True)
    (models / "tiny-lm" / "config.json").write_text("{}")
    (models / "notes").mkdir()                      # no config.json: not a model
    assert forms.model_choices([], "base", runner.workspace) == [*forms.EMBEDDED, "tiny-lm"]
    assert "tiny-lm" in forms.model_choices([], "policy", runner.workspace)
    assert "local:tiny-lm" in forms.model_choices([], "judge", runner.workspace)
    argv = runner.argv("generate", {"model": "tiny-lm"}, runner.runs / "g")
    assert argv[argv.index("--model") + 1] == str((models / "tiny-lm").resolve())
    argv = runner.argv("judge", {"judge": "local:tiny-lm"}, runner.runs / "j")
    assert argv[argv.index("--judge") + 1] == f"local:{(models / 'tiny-lm').resolve()}"


def test_eval_rm_offers_reward_models_to_evaluate_on_held_out_labels():
    fields = {f["dest"]: f for f in forms.form("eval_rm", parse_command.options)}
    assert fields["model"]["picker"] == "reward_model"
    assert fields["labels"]["value"] == "held-out"      # never the labels it trained on
