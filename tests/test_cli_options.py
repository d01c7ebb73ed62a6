"""The table of which option applies to which stage (cli/stages.py), checked for every stage:
an option given to a stage it does not apply to is refused the same way (exit 2, one line,
nothing written); an option that applies reaches the stage's config."""
import argparse
import json
import sys

import pytest

from app import main
from cli import build_parser, parse_command, stages
from cli.train import _rm_config, policy_config

# consumed by the data loader, the reward, or the run, not by the stage's config
NOT_CONFIG = {"--data", "--prompts", "--rm", "--reward", "--config", "--source",
              "--min-agreement", "--label-rounds", "--principle", "--eval-data",
              "--seeds"}   # --seeds: one config per seed (cli.train.ensemble_members)
# a value for each option that differs from every stage's default
VALUES = {"--model": "other-model", "--base": "other-base", "--margin-values": '{"better": 0.3}',
          "--lora-targets": "q_proj,v_proj", "--train-modules": "pooler", "--max-length": "30",
          "--label-rounds": "1", "--thresholds": "0.5,0.7"}


def train_options():
    return [o for options in stages.TRAIN.values() for o in options]


def action_of(flag):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return next(a for a in train._actions if flag in a.option_strings)


def argv_for(flag) -> list[str]:
    action = action_of(flag)
    if isinstance(action, argparse._StoreTrueAction):
        return [flag]
    if flag in VALUES:
        return [flag, VALUES[flag]]
    if action.choices:
        return [flag, action.choices[-1]]   # the last choice is never a stage's default
    return [flag, {int: "3", float: "0.375"}.get(action.type, "x")]


def test_every_train_option_is_in_the_table_with_help():
    in_table = {o.flag for o in train_options()}
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings if s.startswith("--")}
    assert flags - in_table == {"--help", "--out", "--db", "--json"}
    assert all(o.kwargs["help"] for o in train_options())


@pytest.mark.parametrize("kind", stages.TRAIN_KINDS)
def test_options_not_for_a_stage_are_refused_alike(kind, tmp_path, capsys):
    refused = [o for o in train_options() if kind not in o.kinds]
    assert refused   # every stage has options it does not take
    for o in refused:
        out = tmp_path / "run"
        code = main(["train", kind, "--out", str(out), *argv_for(o.flag)])
        err = capsys.readouterr().err
        assert code == 2, (kind, o.flag)
        assert err.count("\n") == 1 and err.startswith(
            f"prefstudio train: {o.flag} is not an option of this trainer (train {kind}; "), err
        assert not out.exists()


@pytest.mark.parametrize("kind", stages.TRAIN_KINDS)
def test_options_for_a_stage_reach_its_config(kind, tmp_path):
    def config(*extra):
        args = build_parser().parse_args(["train", kind, "--out", str(tmp_path / "o"), *extra])
        return _rm_config(args) if kind == "rm" else policy_config(args)

    default = config()
    for o in train_options():
        if kind in o.kinds and o.flag not in NOT_CONFIG:
            assert config(*argv_for(o.flag)) != default, (kind, o.flag)


def test_the_rm_stage_checkpoints_every_save_every_steps_like_the_others():
    # one harness under every stage: train rm takes --save-every like the policy stages
    args = build_parser().parse_args(["train", "rm", "--out", "x", "--save-every", "5"])
    assert _rm_config(args).save_every == 5


def test_a_config_file_is_read_by_every_stage(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lr": 0.125, "seed": 7}))
    for kind in stages.TRAIN_KINDS:
        args = build_parser().parse_args(["train", kind, "--out", "o", "--config", str(config),
                                          "--seed", "9"])
        got = _rm_config(args) if kind == "rm" else policy_config(args)
        assert (got.lr, got.seed) == (0.125, 9), kind   # the option wins over the file


@pytest.mark.parametrize("argv", [
    ["export", "pairs", "--out", "x.jsonl", "--format", "xml"],
    ["import", "f.jsonl", "--format", "xml"],
    ["train", "dpo", "--out", "o", "--beta", "high"],
    ["train", "nonsense", "--out", "o"],
    ["eval", "rm"],
    ["serve", "--port", "eighty"],
    ["frobnicate"],
])
def test_usage_errors_are_one_line_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("prefstudio")


@pytest.mark.parametrize("what, refused", [("rm", "--prompts"), ("policy", "--data"),
                                           ("rm", "--max-prompts")])
def test_eval_refuses_options_of_the_other_evaluation(what, refused, capsys):
    assert main(["eval", what, "--model", "m", refused, "3"]) == 2
    assert capsys.readouterr().err.startswith(
        f"prefstudio eval: {refused} is not an option of this evaluation (eval {what}; ")


@pytest.mark.parametrize("kind", stages.TRAIN_KINDS)
def test_the_studios_job_commands_pass_the_table(kind, db, tmp_path):
    """The Jobs tab starts `app.py train KIND ...`: what it passes must be what KIND takes."""
    from annotate.runlog import read_run
    from annotate.ui.jobs import JobRunner
    from test_ui_jobs import labelled_store

    labelled_store(db)
    idle = tmp_path / "idle.py"
    idle.write_text("")   # the job itself does nothing; its command is checked
    runner = JobRunner(db, tmp_path / "ws", command=[sys.executable, str(idle)],
                       parse_command=parse_command)
    run_id = runner.start(kind, {"max_steps": 2, **({"reward": "length"} if kind in stages.ONLINE else {})})
    runner.jobs[run_id].proc.wait(timeout=60)
    command = read_run(tmp_path / "ws" / "runs" / run_id)["command"][1:]   # after "prefstudio"
    args = build_parser().parse_args(command)
    stages.refuse_options_not_for(kind, args, stages.TRAIN, "train", "trainer")
