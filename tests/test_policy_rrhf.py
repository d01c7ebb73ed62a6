"""RRHF: the loss by hand, the shared-prompt pass, learning the labels' order, the CLI."""
import json
import random

import pytest
import torch

from annotate.runlog import read_metrics, read_run
from annotate.trainingdata import PairExample
from policy.lm import load_policy, token_logprobs
from policy.losses import rrhf_loss
from policy.rrhf import (Candidates, RRHFConfig, candidate_logps, candidates_from_pairs,
                         collate_candidates, ordered_pairs, tokenize_candidates, train_rrhf)
from policy_helpers import TINY_LORA, metric_series, mean
from tiny_models import MARKERS, WORDS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_matches_a_hand_computed_example():
    # prompt 1: three candidates, scores 2 > 1 > 0;  prompt 2: a tie on top and a padded slot
    logps = torch.tensor([[-1.0, -0.5, -2.0], [-1.0, -3.0, -0.2]])
    scores = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    present = torch.tensor([[True, True, True], [True, True, False]])
    loss, rank, ft = rrhf_loss(logps, scores, present, sft_weight=0.5)
    # prompt 1, pairs (worse i, better j) with r_i < r_j: (1,0) max(0, −0.5+1) = 0.5;
    # (2,0) max(0, −2+1) = 0; (2,1) max(0, −2+0.5) = 0 → L_rank = 0.5; best = 0 → L_ft = 1.0
    # prompt 2: candidates 0 and 1 tie (no hinge although p_1 < p_0); the absent third has the
    # best log-prob and the lowest score but makes no pair → L_rank = 0; best = the first of the
    # tie, 0 → L_ft = 1.0
    assert rank.tolist() == pytest.approx([0.5, 0.0])
    assert ft.tolist() == pytest.approx([1.0, 1.0])
    assert loss.tolist() == pytest.approx([0.5 + 0.5 * 1.0, 0.5 * 1.0])
    # the default λ is the paper's 1; every misordered pair adds its own hinge
    _, rank, _ = rrhf_loss(torch.tensor([[-3.0, -2.0, -1.0]]), torch.tensor([[2.0, 1.0, 0.0]]),
                           torch.ones(1, 3, dtype=torch.bool))
    assert rank.item() == pytest.approx(1.0 + 2.0 + 1.0)
    assert ordered_pairs(logps, scores, present) == (2, 3)


def test_labels_become_scores_by_wins_minus_losses():
    prompt = [{"role": "user", "content": "q"}]
    pair = lambda c, r, task="t1", ids=("l1",): PairExample(prompt, c, r, task_id=task, label_ids=ids)
    # a ranking [[a], [b, c], [d]]: a beats b, c, d; b and c beat d; b and c tie
    pairs = [pair("a", "b"), pair("a", "c"), pair("a", "d"), pair("b", "d", ids=("l2",)),
             pair("c", "d"), pair("x", "y", task="t2")]
    first, second = candidates_from_pairs(pairs)
    assert dict(zip(first.responses, first.scores)) == {"a": 3.0, "b": 0.0, "c": 0.0, "d": -3.0}
    assert first.label_ids == ("l1", "l2") and second.scores == [1.0, -1.0]


def _ranked(n, seed=0, k=3):
    """Candidates whose score is their number of marker words: the best has two, the worst none."""
    rng = random.Random(seed)
    plain = [w for w in WORDS if len(w) > 2]
    out = []
    for _ in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.sample(plain, 3))}]
        texts = [" ".join(rng.sample(plain, 3) + rng.sample(MARKERS, 2 - i)[:2 - i])
                 for i in range(k)]
        out.append(Candidates(prompt, texts, [float(k - i) for i in range(k)]))
    return out


def test_shared_prompt_pass_equals_one_pass_per_candidate(tiny_policy):
    model, tok = load_policy(str(tiny_policy))
    config = RRHFConfig()
    cands = _ranked(2)
    cands[1].responses = cands[1].responses[:2]            # fewer candidates: a padded slot
    cands[1].scores = cands[1].scores[:2]
    examples = [tokenize_candidates(tok, c, config) for c in cands]
    batch = collate_candidates(examples, tok.pad_token_id)
    assert batch["present"].tolist() == [[True] * 3, [True, True, False]]
    with torch.no_grad():
        got = candidate_logps(model, batch)
        for b, e in enumerate(examples):
            for k, response in enumerate(e["responses"]):
                ids = torch.tensor([e["prompt"] + response])
                logp = token_logprobs(model, ids, torch.ones_like(ids))[0, len(e["prompt"]) - 1:]
                assert got[b, k].item() == pytest.approx(logp.mean().item(), abs=1e-4)


def test_training_orders_the_candidates_like_the_labels(tiny_policy, tmp_path):
    train, held_out = _ranked(24, seed=1), _ranked(8, seed=2)
    config = RRHFConfig(model=str(tiny_policy), lr=5e-3, batch_size=8, max_steps=25,
                        save_every=10, lora=TINY_LORA)
    model, tok = load_policy(str(tiny_policy))
    batch = collate_candidates([tokenize_candidates(tok, c, config) for c in held_out],
                               tok.pad_token_id)
    with torch.no_grad():
        before = ordered_pairs(candidate_logps(model, batch), batch["scores"], batch["present"])
    out = train_rrhf(config, train, tmp_path / "rrhf")
    metrics = read_metrics(out)
    loss, ordered = metric_series(metrics, "loss"), metric_series(metrics, "pairs_ordered")
    assert len(loss) == 25 and mean(loss[-5:]) < mean(loss[:5])
    assert mean(ordered[-5:]) > mean(ordered[:5]) and ordered[-1] >= 0.9
    assert {"rank_loss", "sft_loss", "grad_norm"} <= {m["name"] for m in metrics}
    run = read_run(out)
    assert run["status"] == "done" and run["summary"]["prompts"] == 24
    # unseen prompts: the trained policy orders their candidates' p_i like the scores
    model, tok = load_policy(str(out))
    with torch.no_grad():
        after = ordered_pairs(candidate_logps(model, batch), batch["scores"], batch["present"])
    assert after[1] == before[1] == 24 and after[0] >= 22 and after[0] > before[0]


def test_a_resumed_run_continues_from_its_checkpoint(tiny_policy, tmp_path):
    config = RRHFConfig(model=str(tiny_policy), lr=5e-3, batch_size=4, max_steps=2,
                        save_every=1, lora=TINY_LORA)
    out = train_rrhf(config, _ranked(8), tmp_path / "run")
    config.max_steps = 4
    train_rrhf(config, _ranked(8), out)
    assert read_run(out)["summary"]["steps"] == 4
    assert sorted({m["step"] for m in read_metrics(out)}) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="different config"):
        train_rrhf(RRHFConfig(model=str(tiny_policy), sft_weight=2.0, max_steps=5,
                              lora=TINY_LORA), _ranked(8), out)


def test_bad_settings_are_refused_before_anything_is_written(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="two or more ranked candidates"):
        train_rrhf(RRHFConfig(model=str(tiny_policy)), [Candidates([], ["a"], [1.0])], tmp_path / "x")
    with pytest.raises(ValueError, match="need a reward"):
        train_rrhf(RRHFConfig(model=str(tiny_policy)), None, tmp_path / "x", prompts=[[]])
    with pytest.raises(ValueError, match="sft_weight"):
        train_rrhf(RRHFConfig(model=str(tiny_policy), sft_weight=-1), _ranked(2), tmp_path / "x")
    assert not (tmp_path / "x").exists()
