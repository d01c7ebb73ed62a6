"""Every training stage under `accelerate launch` with two CPU processes.

Each stage runs twice from the same file through the CLI, 2 optimizer steps: once as one
process with ``--grad-accum 2``, once as two processes with ``--grad-accum 1`` (PPO, which
has no accumulation: one process with twice the batch). Both see the same global batch in the
same order (the harness deals micro-batches to processes in turn), so the losses they log must
agree: one process averages its two micro-batches' losses, two processes average their
gradients (DDP) and their metrics. A rank that trained alone, saw other data, or skipped the
gradient average would show here.

``rm-db``, ``sft-db``, ``dpo-db`` and ``rrhf-db`` train from the store (imported from the same files),
and ``rs-db``, ``rloo-db``, ``ppo-db`` sample the store's prompts; every process opens it
read-only (``cli.data``); rank 0 alone ingests the run afterwards.

Sampling stages draw greedily (rs: ``--temperature 0``) or nearly so (ppo, rloo: 0.01, since
their log-probs divide by the temperature), so both runs sample the same responses; score
normalisation and advantage whitening are switched off for them (their running and batch
statistics are per process, which is what a larger world legitimately changes). RLOO's loss
is then 0 in both runs (k identical samples have no advantage); its reward still has to agree.
"""
import json
import subprocess
import sys

import pytest

from annotate.runlog import read_metrics, read_run
from app import main as app_main
from launch_helpers import ROOT, env, launch_cmd
from policy_helpers import tiny_prompts
from rm_synthetic import marker_data

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU processes via torchrun")

# large enough that step 2's loss shows whether step 1's update used the global batch
LR = {"rm": "0.05", "rm-db": "0.05", "sft-db": "0.01", "dpo-db": "0.01", "sft": "0.01", "dpo": "0.01", "rs": "0.01", "rloo": "0.003", "ppo": "0.003",
      "rrhf": "0.01", "rrhf-db": "0.01", "cai": "0.01"}
RL_CONFIG = {"shaping": {"normalize": False, "clip": None, "missing_eos_penalty": 0.0}}

# stage -> (data option, [options of both runs], {option: (one process, two processes)},
#           config JSON or None, metrics that must agree)
STAGES = {
    "rm": ("--data", ["--batch-size", "4", "--eval-fraction", "0"],
           {"--grad-accum": ("2", "1")}, {"log_every": 1}, ["loss"]),
    # the same from the store: every process opens it read-only
    "rm-db": ("--db", ["--batch-size", "4", "--eval-fraction", "0"],
              {"--grad-accum": ("2", "1")}, {"log_every": 1}, ["loss"]),
    "sft": ("--data", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None, ["loss"]),
    "sft-db": ("--db", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None, ["loss"]),
    "dpo": ("--data", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None, ["loss"]),
    "dpo-db": ("--db", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None, ["loss"]),
    "rrhf": ("--data", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None,
             ["loss", "rank_loss", "pairs_ordered"]),
    "rrhf-db": ("--db", ["--batch-size", "1"], {"--grad-accum": ("2", "1")}, None,
                ["loss", "rank_loss", "pairs_ordered"]),
    "rs": ("--prompts", ["--batch-size", "1", "--k", "2", "--rounds", "1", "--temperature", "0",
                         "--max-new-tokens", "6", "--reward", "length"],
           {"--grad-accum": ("2", "1")}, None, ["loss", "reward"]),
    "rloo": ("--prompts", ["--batch-size", "1", "--k", "2", "--temperature", "0.01",
                           "--max-new-tokens", "6", "--reward", "length"],
             {"--grad-accum": ("2", "1")}, RL_CONFIG, ["loss", "reward"]),
    "ppo": ("--prompts", ["--temperature", "0.01", "--max-new-tokens", "6", "--reward", "length",
                          "--ppo-epochs", "1"],
            {"--batch-size": ("2", "1"), "--minibatch-size": ("2", "1")},
            {**RL_CONFIG, "whiten_advantages": False}, ["loss", "reward"]),
    # each process critiques and revises its share of the prompts; all train on every revision
    "cai": ("--prompts", ["--batch-size", "1", "--temperature", "0", "--max-new-tokens", "6"],
            {"--grad-accum": ("2", "1")}, None, ["loss", "revised_prompts"]),
}
# the sampling stages from the store too: without --prompts they sample its prompts (never
# the held-out ones), every process reading the store read-only
for _stage in ("rs", "rloo", "ppo"):
    STAGES[f"{_stage}-db"] = ("--db", *STAGES[_stage][1:])
    LR[f"{_stage}-db"] = LR[_stage]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm, tiny_policy):
    """Every stage as one process and as two, each set in one launch (tests/stage_runner.py):
    {processes: {stage: metrics}}."""
    folder = tmp_path_factory.mktemp("stages")
    files = _data_files(folder)
    results = {}
    for processes in (1, 2):
        plan = [_args(stage, processes, folder / f"{processes}p-{stage}", files,
                      tiny_lm if stage.startswith("rm") else tiny_policy) for stage in STAGES]
        plan_file = folder / f"plan-{processes}.json"
        plan_file.write_text(json.dumps(plan))
        runner = [str(ROOT / "tests" / "stage_runner.py"), str(plan_file)]
        cmd = launch_cmd(2) + runner if processes == 2 else [sys.executable, *runner]
        done = subprocess.run(cmd, env=env(), cwd=folder, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[processes] = {stage: folder / f"{processes}p-{stage}" for stage in STAGES}
    return results


def _data_files(folder):
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                         "rejected": p.rejected}) + "\n"
                             for p in marker_data(16, seed=3).pairs))
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p[0]["content"]}) + "\n"
                               for p in tiny_prompts(8, seed=5)))
    db = folder / "labels.duckdb"
    assert app_main(["import", str(pairs), "--db", str(db)]) == 0
    assert app_main(["import", str(prompts), "--db", str(db)]) == 0
    return {"--data": pairs, "--prompts": prompts, "--db": db}


def _args(stage, processes, out, files, model) -> list[str]:
    data_option, shared, split, config, _ = STAGES[stage]
    args = ["train", stage.split("-")[0], data_option, str(files[data_option]), "--out", str(out),
            "--max-steps", "2", "--seed", "1", "--lr", LR[stage], *shared,
            "--base" if stage.startswith("rm") else "--model", str(model)]
    for option, values in split.items():
        args += [option, values[processes - 1]]
    if config:
        path = out.parent / f"{out.name}.config.json"
        path.write_text(json.dumps(config))
        args += ["--config", str(path)]
    return args


def _series(metrics: list[dict], name: str) -> list[float]:
    return [m["value"] for m in sorted(metrics, key=lambda m: m["step"]) if m["name"] == name]


@pytest.mark.parametrize("stage", list(STAGES))
def test_two_processes_match_one_with_the_same_global_batch(stage, runs):
    one, two = runs[1][stage], runs[2][stage]
    for out in (one, two):
        run = read_run(out)
        assert run["status"] == "done" and run["summary"]["steps"] == 2
    one, two = read_metrics(one), read_metrics(two)
    for name in STAGES[stage][4]:
        expected, got = _series(one, name), _series(two, name)
        assert expected, f"{stage}: no {name} metric logged"
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (stage, name)
    # one metrics row per step, written by rank 0 only
    assert [m["step"] for m in two if m["name"] == "loss"] == [1, 2]
