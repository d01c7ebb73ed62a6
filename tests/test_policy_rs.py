"""Rejection sampling / RAFT: selection rules, the records the store ingests, learning."""
import random
import re

import pytest
import torch

from annotate import store
from annotate.runlog import read_metrics, read_records, read_run
from policy.generate import SamplingParams
from harness.lora import LoraSettings
from policy.rewards import keyword_reward
from policy.rs import (RSConfig, best_per_prompt, check_thresholds, quantile_sets, sample_records,
                       select, top_fraction, train_rs)
from tiny_models import MARKERS, WORDS


def test_best_of_k_per_prompt():
    prompt_index = [0, 0, 0, 1, 1, 1, 2, 2]
    rewards = torch.tensor([0.1, 0.9, 0.5, -1.0, -2.0, -1.0, 3.0, 2.0])
    assert best_per_prompt(prompt_index, rewards) == [False, True, False, True, False, False, True, False]
    # a threshold drops prompts whose best sample is still bad
    assert best_per_prompt(prompt_index, rewards, min_reward=0.0) == \
        [False, True, False, False, False, False, True, False]


def test_top_fraction_overall():
    rewards = torch.tensor([0.1, 0.9, 0.5, -1.0, 3.0, 2.0, 0.0, 0.2])
    assert top_fraction(rewards, 0.25) == [False, False, False, False, True, True, False, False]
    assert top_fraction(rewards, 0.3) == [False, True, False, False, True, True, False, False]  # ⌈2.4⌉
    assert top_fraction(rewards, 0.5, min_reward=1.0) == [False] * 4 + [True, True, False, False]


def test_records_are_rows_the_store_accepts(db):
    prompts = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "tell a story"}]]
    samples = [{"prompt_index": 0, "text": "hi there", "reward": 1.0, "kept": True},
               {"prompt_index": 0, "text": "hi there", "reward": 1.0, "kept": False},  # same text
               {"prompt_index": 0, "text": "go away", "reward": -1.0, "kept": False},
               {"prompt_index": 1, "text": "", "reward": 0.0, "kept": False},           # empty
               {"prompt_index": 1, "text": "once upon", "reward": 0.5, "kept": True}]
    responses, scores = sample_records(samples, prompts, "reward:keyword:x", "rs-1", "tiny", {"k": 2})
    assert len(responses) == len(scores) == 3
    kept = {r["text"]: s["kept"] for r, s in zip(responses, scores)}
    assert kept == {"hi there": True, "go away": False, "once upon": True}
    store.add_prompts(db, [store.prompt_row(p, source="test") for p in prompts])
    store.add_responses(db, [store.response_row(r["prompt_id"], r["text"], model=r["model"],
                                                run_id=r["run_id"], gen_params=r["gen_params"])
                             for r in responses])
    assert [r["id"] for r in responses] == [store.response_id(store.prompt_id(prompts[i]), t)
                                            for i, t in [(0, "hi there"), (0, "go away"), (1, "once upon")]]
    store.add_scores(db, scores)
    rows = db.query("SELECT response_id, kept FROM scores WHERE run_id = 'rs-1' ORDER BY value")
    assert [r["kept"] for r in rows] == [False, True, True]


def _prompts(n, seed):
    rng = random.Random(seed)
    plain = [w for w in WORDS if len(w) > 2]
    return [[{"role": "user", "content": " ".join(rng.sample(plain, 3))}] for _ in range(n)]


@pytest.mark.parametrize("selection", ["best", "top"])
def test_rejection_sampling_raises_the_reward_with_bounded_kl(tiny_policy, tmp_path, db, selection):
    prompts = _prompts(16, seed=5)
    config = RSConfig(model=str(tiny_policy), k=8, rounds=3, max_steps=36, select=selection,
                      top_fraction=0.1, min_reward=1.0, lr=1e-2, batch_size=8, save_every=0,
                      sampling=SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0),
                      lora=LoraSettings(r=8, alpha=16))
    out = train_rs(config, prompts, keyword_reward(MARKERS), tmp_path / selection,
                   scorer="reward:keyword")
    metrics = read_metrics(out)
    per_round = [m["value"] for m in metrics if m["name"] == "reward"]
    final = next(m["value"] for m in metrics if m["name"] == "final_reward")
    kl = next(m["value"] for m in metrics if m["name"] == "final_kl")
    assert len(per_round) == 3
    assert final > per_round[0] + 0.3, (per_round, final)
    assert 0.0 < kl < 20.0
    # every sample is recorded with its score; the kept ones are the ones the rounds trained on
    scores = read_records(out, "scores")
    responses = read_records(out, "responses")
    assert {s["response_id"] for s in scores} == {r["id"] for r in responses}
    kept = [s for s in scores if s["kept"]]
    assert kept and all(s["value"] >= 1.0 for s in kept)
    assert sum(m["value"] for m in metrics if m["name"] == "kept") >= len(kept)
    run = read_run(out)
    assert run["status"] == "done" and run["summary"]["final_reward"] == pytest.approx(final)
    # the database owner ingests the folder: the store knows which samples were kept
    store.ingest_run_dir(db, out)
    stored = db.query("SELECT s.kept, s.value FROM scores s JOIN responses r ON r.id = s.response_id "
                      "WHERE r.run_id = ?", [run["id"]])
    assert len(stored) == len(scores) and sum(r["kept"] for r in stored) == len(kept)
    assert store.get_run(db, run["id"])["kind"] == "rs"


# --- ReST (Gulcehre et al. 2023): Improve steps with rising reward quantiles -------------------

def test_rest_thresholds_keep_the_samples_above_each_quantile():
    # rewards 0..9 in a scrambled order; numpy's (linear) quantiles: 0.5 → 4.5, 0.7 → 6.3, 0.9 → 8.1
    rewards = torch.tensor([3.0, 9.0, 0.0, 7.0, 5.0, 1.0, 8.0, 2.0, 6.0, 4.0])
    cuts, sets = quantile_sets(rewards, [0.5, 0.7, 0.9])
    assert cuts == pytest.approx([4.5, 6.3, 8.1])
    kept = [{int(rewards[j]) for j, k in enumerate(keep) if k} for keep in sets]
    assert kept == [{5, 6, 7, 8, 9}, {7, 8, 9}, {9}]
    # a reward exactly at the cut is kept; min_reward still floors every step
    cuts, sets = quantile_sets(torch.tensor([1.0, 2.0, 3.0]), [0.5], min_reward=2.5)
    assert cuts == [2.0] and sets == [[False, False, True]]
    config = RSConfig(thresholds=[0.5, 0.9])
    assert select(config, list(range(10)), rewards) == quantile_sets(rewards, [0.5, 0.9])[1]
    assert len(select(RSConfig(), [0, 0, 1, 1], torch.tensor([1.0, 2.0, 3.0, 0.0]))) == 1


@pytest.mark.parametrize("thresholds, message", [
    ([0.5, 0.5], "thresholds must rise"), ([0.7, 0.5], "thresholds must rise"),
    ([0.0, 0.5], "0.0 is not a quantile in (0, 1)"), ([0.5, 1.0], "1.0 is not a quantile"),
    ([], "give one or more quantiles")])
def test_rest_thresholds_must_be_rising_quantiles(thresholds, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_thresholds(thresholds)


def test_rest_records_which_samples_each_improve_step_kept(tiny_policy, tmp_path, db):
    prompts = _prompts(8, seed=2)
    config = RSConfig(model=str(tiny_policy), k=4, rounds=1, max_steps=6, thresholds=[0.5, 0.8],
                      lr=1e-2, batch_size=4, save_every=0,
                      sampling=SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0),
                      lora=LoraSettings(r=8, alpha=16))
    out = train_rs(config, prompts, keyword_reward(MARKERS), tmp_path / "rest", scorer="reward:kw")
    metrics = {m["name"]: m["value"] for m in read_metrics(out) if m["name"].startswith(("threshold", "kept"))}
    cuts = [metrics["threshold_0"], metrics["threshold_1"]]
    assert cuts[0] <= cuts[1]
    # each Improve step's threshold is its quantile of the Grow set's rewards (every sample,
    # repeats and empty texts included, as sampled)
    scores = read_records(out, "scores")
    for s in scores:
        assert s["improve_steps"] == [i for i, cut in enumerate(cuts) if s["value"] >= cut]
        assert s["kept"] == bool(s["improve_steps"])
    assert metrics["kept_0"] >= metrics["kept_1"] >= 1
    # two Improve steps of 3 optimizer steps each (max_steps split over rounds × steps)
    assert len([m for m in read_metrics(out) if m["name"] == "loss"]) == 6
    assert read_run(out)["config"]["thresholds"] == [0.5, 0.8]
    store.ingest_run_dir(db, out)
    kept = db.query("SELECT count(*) AS n FROM scores WHERE kept")[0]["n"]
    assert kept == sum(1 for s in scores if s["kept"])


@pytest.mark.parametrize("argv, message", [
    (["--thresholds", "0.9,0.5"], "--thresholds must rise"),
    (["--thresholds", "0.5,1.5"], "--thresholds: 1.5 is not a quantile in (0, 1)"),
    (["--thresholds", "half"], "--thresholds: a comma list of quantiles"),
    (["--thresholds", "0.5", "--select", "top"], "--thresholds replaces --select"),
])
def test_bad_thresholds_exit_2_with_one_line(tmp_path, capsys, argv, message):
    from app import main
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    code = main(["train", "rs", "--reward", "length", "--prompts", str(prompts), *argv,
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
