"""`prefstudio train rm` / `eval rm` through the real CLI, the store as data source, ensembles."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from annotate import store, trainingdata
from rm_synthetic import marker_data
from rewardmodel.score import Ensemble, load_scorer, safety_gated
from rewardmodel.train import RMConfig, train

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ["significantly", "better", "slightly", "negligibly"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prefstudio(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def fill_store(db, data, *, ai_every: int = 3):
    """Pairs as labelled pairwise tasks (every ai_every-th by an AI judge with a soft_prob,
    the others by a person with a margin level) and rankings as K-way tasks."""
    prompts, responses, tasks, labels = [], [], [], []
    for i, p in enumerate(data.pairs):
        pr = store.prompt_row(p.prompt, source="synthetic")
        c, r = store.response_row(pr["id"], p.chosen), store.response_row(pr["id"], p.rejected)
        task = store.task_row(pr["id"], [r["id"], c["id"]])  # shown rejected first
        prompts.append(pr)
        responses += [c, r]
        tasks.append(task)
        if i % ai_every == 0:
            labels.append(store.label_row(task, "judge-x", [[c["id"]], [r["id"]]], source="ai",
                                          judge="local:x", soft_prob=0.9))
        else:
            labels.append(store.label_row(task, "ann", [[c["id"]], [r["id"]]],
                                          margin_level=LEVELS[i % 4]))
    for k in data.rankings:
        pr = store.prompt_row(k.prompt)
        rows = [store.response_row(pr["id"], text) for text in k.responses]
        task = store.task_row(pr["id"], [row["id"] for row in rows])
        prompts.append(pr)
        responses += rows
        tasks.append(task)
        labels.append(store.label_row(task, "ann", [[rows[j]["id"] for j in g] for g in k.ranking]))
    store.add_prompts(db, prompts)
    store.add_responses(db, responses)
    store.add_tasks(db, tasks)
    store.add_labels(db, labels)


def test_store_pairs_become_margin_soft_and_ranking_comparisons(db):
    from rewardmodel.batches import comparisons_from
    fill_store(db, marker_data(12, seed=4, rankings=2))
    data = trainingdata.from_store(db)
    comparisons = comparisons_from(data)
    pairs = [c for c in comparisons if c.is_pair]
    assert len(pairs) == 12 and len(comparisons) == 14  # the rankings' pairs are not doubled
    assert {c.margin for c in pairs if c.soft_prob is None} == {1.0, 2 / 3, 1 / 3, 0.0}
    assert sorted({c.soft_prob for c in pairs} - {None}) == [0.9]
    assert all("zebra" in c.responses[c.ranking[0][0]] for c in pairs)
    assert len(comparisons_from(data, use_rankings=False)) == 12 + 2 * 6  # C(4,2) per ranking
    human = comparisons_from(trainingdata.from_store(db, source="human"))
    assert all(c.soft_prob is None for c in human) and len([c for c in human if c.is_pair]) == 8


def test_train_rm_from_store_then_eval_rm_prints_json_and_plot(tiny_lm, db, tmp_path):
    fill_store(db, marker_data(160, seed=5, rankings=10))
    db.close()
    out = tmp_path / "run"
    done = prefstudio("train", "rm", "--db", db.path, "--base", tiny_lm, "--max-steps", 40,
                      "--lr", "1e-2", "--batch-size", 8, "--max-length", 48, "--lora-r", 8,
                      "--eval-every", 20, "--out", out, "--json")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 40 and summary["eval_comparisons"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["data_hash"] and run["config"]["lr"] == 0.01
    assert len(json.loads((out / "inputs.json").read_text())) == 170  # lineage: every label
    with store.Store(db.path) as s:  # the CLI ingested the run folder
        assert store.get_run(s, run["id"])["status"] == "done"
        assert any(m["name"] == "eval_accuracy" for m in store.metrics(s, run["id"]))
        assert store.lineage(s, run["id"])["labels"] == 170

    plot = tmp_path / "chosen-vs-rejected.png"
    done = prefstudio("eval", "rm", "--db", db.path, "--model", out, "--plot", plot)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["n"] == 160 + 10 * 6
    assert result["accuracy"] >= 0.9
    assert set(result["accuracy_by_margin"]) == set(LEVELS) | {"none"}
    assert 0 <= result["calibration_error"] <= 0.5
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_rm_on_a_file(tiny_lm, tmp_path):
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in marker_data(40, seed=6).pairs]
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    prefstudio("train", "rm", "--data", data_file, "--base", tiny_lm, "--max-steps", 5,
               "--out", out, "--eval-fraction", 0)
    result = json.loads(prefstudio("eval", "rm", "--model", out, "--data", data_file).stdout)
    assert result["n"] == 40 and (out / "eval-pairs.png").exists()


def test_train_rm_seeds_writes_an_ensemble_that_every_rm_option_takes(tiny_lm, tmp_path):
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in marker_data(60, seed=8).pairs]
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ens"
    done = prefstudio("train", "rm", "--data", data_file, "--base", tiny_lm, "--max-steps", 4,
                      "--max-length", 48, "--seeds", "0,1", "--out", out)
    assert "ensemble of 2 reward models" in done.stdout and f"--rm {out}" in done.stdout
    config = json.loads((out / "ensemble.json").read_text())
    assert config["normalize"] is True
    assert [m["path"] for m in config["models"]] == ["seed-0", "seed-1"]   # movable folder
    runs = [json.loads((out / f"seed-{s}" / "run.json").read_text()) for s in (0, 1)]
    assert [r["config"]["seed"] for r in runs] == [0, 1] and runs[0]["id"] != runs[1]["id"]

    ensemble = load_scorer(out)            # the folder stands for its ensemble
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    result = json.loads(prefstudio("eval", "rm", "--model", out, "--data", data_file).stdout)
    assert result["n"] == 60
    for bad in ("0", "0,0", "0,x"):
        done = prefstudio("train", "rm", "--data", data_file, "--seeds", bad, "--out",
                          tmp_path / "bad", check=False)
        assert done.returncode == 2 and done.stderr.startswith("prefstudio train: --seeds"), done.stderr
    assert not (tmp_path / "bad").exists()


def test_bad_input_exits_2_with_one_line(tmp_path, tiny_lm):
    bad = tmp_path / "ens.json"
    bad.write_text(json.dumps({"models": 3}))
    cases = [
        ("eval", "rm", "--model", bad, "--db", tmp_path / "x.duckdb"),
        ("eval", "rm", "--model", tmp_path / "nope", "--db", tmp_path / "x.duckdb"),
        ("train", "rm", "--db", tmp_path / "x.duckdb", "--data", tmp_path / "f.jsonl",
         "--out", tmp_path / "o"),
        ("train", "rm", "--data", tmp_path / "f.jsonl", "--out", tmp_path / "o",
         "--margin-values", "[1, 2]"),
    ]
    for args in cases:
        done = prefstudio(*args, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"prefstudio {args[0]}: ")
    assert not (tmp_path / "x.duckdb").exists()  # eval never creates a database
    bad.write_text(json.dumps({"models": [{"weight": 1}]}))
    with pytest.raises(ValueError, match=r"models\[0\]: path: missing"):
        load_scorer(bad)


@pytest.fixture(scope="module")
def two_rms(tmp_path_factory, tiny_lm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rms")
    for name, seed in (("helpful", 0), ("safety", 1)):
        train(RMConfig(out=str(root / name), base=str(tiny_lm), max_length=48, lora_r=8,
                       lr=1e-2, max_steps=15, eval_fraction=0, seed=seed), marker_data(120, seed=seed))
    torch.set_num_threads(threads)
    return root


def test_ensemble_weighted_sum_and_llama2_safety_gate(two_rms, tmp_path):
    data = marker_data(8, seed=7)
    prompts = [p.prompt for p in data.pairs]
    responses = [p.rejected for p in data.pairs]
    helpful = load_scorer(two_rms / "helpful").score(prompts, responses)
    safety = load_scorer(two_rms / "safety").score(prompts, responses)

    config = tmp_path / "ensemble.json"
    config.write_text(json.dumps({"models": [{"path": str(two_rms / "helpful"), "weight": 1.0},
                                             {"path": str(two_rms / "safety"), "weight": 0.5}]}))
    summed = load_scorer(config).score(prompts, responses)
    assert torch.allclose(summed, helpful + 0.5 * safety, atol=1e-5)

    threshold = safety.median().item()  # half of the responses fall below it
    config.write_text(json.dumps({"models": [{"path": str(two_rms / "helpful")}],
                                  "safety": {"path": str(two_rms / "safety"),
                                             "threshold": threshold, "tags": ["risky"]}}))
    gated = load_scorer(config)
    assert isinstance(gated, Ensemble)
    tags = [["risky"] if i == 7 else [] for i in range(8)]
    got = gated.score(prompts, responses, tags=tags)
    for i in range(8):
        takes_over = safety[i] < threshold or i == 7
        assert got[i].item() == pytest.approx((safety if takes_over else helpful)[i].item(), abs=1e-5)
    assert (safety < threshold).sum() >= 1 and (safety >= threshold).sum() >= 1
    # the same rule, by hand
    assert safety_gated(torch.tensor([5.0, 5.0, 5.0]), torch.tensor([0.1, 0.9, 0.9]), 0.15,
                        torch.tensor([False, False, True])).tolist() == pytest.approx([0.1, 5.0, 0.9])


def test_trained_model_keeps_its_reward_scale_and_a_normalized_ensemble_uses_it(two_rms, tmp_path):
    # without a held-out split the scale is measured on the training comparisons (all 120 here)
    data = marker_data(120, seed=0)
    prompts = [p.prompt for p in data.pairs] * 2
    responses = [p.chosen for p in data.pairs] + [p.rejected for p in data.pairs]
    helpful = load_scorer(two_rms / "helpful")
    stats = json.loads((two_rms / "helpful" / "rm.json").read_text())["reward_stats"]
    assert helpful.reward_stats == stats
    assert stats["on"] == "training sample" and stats["n"] == 240
    r = helpful.score(prompts, responses)
    # measured in the run's precision (bf16 products where they are fast, harness/precision.py),
    # scored here in fp32: equal up to bf16 rounding, a small fraction of the spread
    assert stats["std"] == pytest.approx(r.std(unbiased=False).item(), rel=1e-2)
    assert stats["mean"] == pytest.approx(r.mean().item(), abs=1e-2 * stats["std"])

    safety = load_scorer(two_rms / "safety")
    config = tmp_path / "normalized.json"
    config.write_text(json.dumps({"normalize": True,
                                  "models": [{"path": str(two_rms / "helpful"), "weight": 1.0},
                                             {"path": str(two_rms / "safety"), "weight": 0.5}]}))
    few_p, few_r = prompts[:8], responses[:8]
    s = safety.reward_stats
    expected = ((helpful.score(few_p, few_r) - stats["mean"]) / stats["std"]
                + 0.5 * (safety.score(few_p, few_r) - s["mean"]) / s["std"])
    assert torch.allclose(load_scorer(config).score(few_p, few_r), expected, atol=1e-5)

    # a model without a measured scale (trained before it was kept) is refused by name
    old = tmp_path / "old"
    shutil.copytree(two_rms / "safety", old)
    info = json.loads((old / "rm.json").read_text())
    del info["reward_stats"]
    (old / "rm.json").write_text(json.dumps(info))
    config.write_text(json.dumps({"normalize": True, "models": [{"path": str(old)}]}))
    with pytest.raises(ValueError, match=r"models\[0\].*normalize needs the reward scale"):
        load_scorer(config)
    inner = tmp_path / "inner.json"
    inner.write_text(json.dumps({"models": [{"path": str(two_rms / "helpful")}]}))
    config.write_text(json.dumps({"normalize": True, "models": [{"path": str(inner)}]}))
    with pytest.raises(ValueError, match=r"models\[0\].*not to a nested ensemble"):
        load_scorer(config)
    config.write_text(json.dumps({"normalize": "yes", "models": [{"path": str(old)}]}))
    with pytest.raises(ValueError, match="normalize: expected true or false"):
        load_scorer(config)
