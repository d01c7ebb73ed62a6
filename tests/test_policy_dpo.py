"""DPO / IPO: hand-computed losses, the concatenated pass, the cached reference, learning."""
import math
import random

import pytest
import torch

from annotate.runlog import read_metrics, read_run
from annotate.trainingdata import PairExample
from harness.lora import LoraSettings
from policy.dpo import (DPOConfig, collate_pairs, planned_indices,
                        sequence_logps, tokenize_pair, train_dpo)
from policy.generate import SamplingParams
from policy.lm import load_policy, token_logprobs
from policy.losses import dpo_loss, ipo_loss
from policy.measure import measure_policy
from policy.rewards import keyword_reward
from tiny_models import MARKERS, WORDS


def test_losses_match_hand_computed_values():
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    # pair 1: h = (−1 + 1.5) − (−2 + 1.5) = 1;  pair 2: h = (−3 + 2) − (−1 + 2) = −2
    loss = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-0.1)), math.log(1 + math.exp(0.2))])
    assert loss[0].item() == pytest.approx(0.644397, abs=1e-6)
    # an offset of 0.5 (a "significantly better" label): −log σ(0.1 − 0.5)
    offset = dpo_loss(pc, pr, rc, rr, beta=0.1, offset=torch.tensor([0.5, 0.0]))
    assert offset[0].item() == pytest.approx(math.log(1 + math.exp(0.4)), abs=1e-6)  # 0.913015
    # IPO with τ = 0.1: (h − 5)²
    assert ipo_loss(pc, pr, rc, rr, tau=0.1).tolist() == pytest.approx([16.0, 49.0])


def _pairs(n, seed=0):
    """Chosen replies carry marker words, rejected ones never do."""
    rng = random.Random(seed)
    plain = [w for w in WORDS if len(w) > 2]
    pairs = []
    for _ in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.sample(plain, 3))}]
        chosen = " ".join(rng.sample(plain, 2) + [rng.choice(MARKERS)] + rng.sample(plain, 1))
        rejected = " ".join(rng.sample(plain, 4))
        pairs.append(PairExample(prompt=prompt, chosen=chosen, rejected=rejected, margin=1.0))
    return pairs


def test_prefix_shared_pass_equals_separate_passes(tiny_policy):
    """Chosen and rejected share one pass after their prompt, short pairs share a row; each
    reply is scored as if it followed its prompt alone."""
    model, tok = load_policy(str(tiny_policy))
    config = DPOConfig()
    pairs = _pairs(4)
    pairs[0].prompt = [{"role": "user", "content": "a much longer prompt about the sun and the moon"
                                                   " and the stars and the sea and the sky"}]
    pairs[1].chosen = "a much longer chosen reply that pads the others in the chosen block"
    pairs[2].rejected = "no"       # padding inside the rejected block, too
    examples = [dict(tokenize_pair(tok, p, config), index=i) for i, p in enumerate(pairs)]
    assert tok.convert_ids_to_tokens(examples[0]["chosen"])[-1] == "<|im_end|>"
    batch = collate_pairs(examples, tok.pad_token_id)
    assert batch["input_ids"].shape[0] < len(pairs)     # short pairs share a row
    with torch.no_grad():
        chosen, rejected = sequence_logps(model, batch)
        for i, e in enumerate(examples):
            for key, got in (("chosen", chosen[i]), ("rejected", rejected[i])):
                ids = torch.tensor([e["prompt"] + e[key]])
                logp = token_logprobs(model, ids, torch.ones_like(ids))[0, len(e["prompt"]) - 1:]
                assert got.item() == pytest.approx(logp.sum().item(), abs=1e-4)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_dpo_widens_the_margin_and_the_policy_prefers_chosen_like_text(tiny_policy, tmp_path, loss):
    pairs, held_out = _pairs(32, seed=1), _pairs(8, seed=2)
    config = DPOConfig(model=str(tiny_policy), loss=loss, beta=0.1 if loss == "sigmoid" else 0.5,
                       lr=5e-3, batch_size=8, max_steps=30, save_every=10, margin_scale=0.1,
                       lora=LoraSettings(r=8, alpha=16))
    out = train_dpo(config, pairs, tmp_path / loss)
    metrics = read_metrics(out)
    series = lambda name: [m["value"] for m in metrics if m["name"] == name]
    if loss == "sigmoid":
        # the policy starts equal to the cached reference: −log σ(0 − offset), offset 0.1 × 1
        assert series("loss")[0] == pytest.approx(math.log(1 + math.exp(0.1)), abs=1e-3)
    margin = series("reward_margin")
    assert len(margin) == 30 and sum(margin[-5:]) / 5 > sum(margin[:5]) / 5 + 0.05
    assert series("reward_accuracy")[-1] >= 0.75
    assert read_run(out)["status"] == "done" and (out / "reference_logps.pt").exists()

    # on unseen prompts the trained policy prefers the marker reply more than the reference does
    model, tok = load_policy(str(out))
    batch = collate_pairs([dict(tokenize_pair(tok, p, config), index=i)
                           for i, p in enumerate(held_out)], tok.pad_token_id)
    with torch.no_grad():
        c, r = sequence_logps(model, batch)
        with model.disable_adapter():
            c0, r0 = sequence_logps(model, batch)
    assert ((c - r) - (c0 - r0)).mean().item() > 0.5


def test_dpo_raises_the_sampled_reward_with_bounded_kl(tiny_policy, tmp_path):
    pairs = _pairs(48, seed=3)
    prompts = [p.prompt for p in _pairs(24, seed=4)]
    reward, params = keyword_reward(MARKERS), SamplingParams(max_new_tokens=8, temperature=1.0, seed=0)
    base, tok = load_policy(str(tiny_policy))
    before = measure_policy(base, tok, prompts, reward, params)
    config = DPOConfig(model=str(tiny_policy), lr=5e-3, beta=0.1, batch_size=8, max_steps=40,
                       save_every=0, lora=LoraSettings(r=8, alpha=16))
    model, tok = load_policy(str(train_dpo(config, pairs, tmp_path / "dpo")))
    after = measure_policy(model, tok, prompts, reward, params)
    assert before["kl"] == pytest.approx(0.0, abs=1e-5)
    assert after["reward"] > before["reward"] + 0.3
    assert 0.0 < after["kl"] < 20.0


def test_bad_options_are_refused_before_anything_is_written(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        train_dpo(DPOConfig(model=str(tiny_policy), loss="hinge"), _pairs(2), tmp_path / "x")
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(DPOConfig(model=str(tiny_policy)), [], tmp_path / "x")
    with pytest.raises(ValueError, match="at least 1 token"):  # a --config file can say 0
        train_dpo(DPOConfig(model=str(tiny_policy), max_response_len=0), _pairs(2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_short_run_scores_the_reference_of_its_own_pairs_only(tiny_policy, tmp_path):
    # 2 steps × 2 pairs of 20: only the 4 planned pairs get a reference log-prob
    config = DPOConfig(model=str(tiny_policy), batch_size=2, max_steps=2, save_every=1,
                       lora=LoraSettings(r=4, alpha=8))
    out = train_dpo(config, _pairs(20), tmp_path / "short")
    cached = torch.load(out / "reference_logps.pt")
    scored = (~cached["chosen"].isnan()).nonzero().flatten().tolist()
    assert scored == planned_indices(20, config, rank=0, world=1) and len(scored) == 4
    assert not cached["rejected"][scored].isnan().any()
    # going on past the planned steps would need the initial policy again: a clear error
    config.max_steps = 4
    with pytest.raises(ValueError, match="more --max-steps than the run started with"):
        train_dpo(config, _pairs(20), out)
    run = read_run(out)   # the attempt is recorded as failed; the trained policy stays
    assert run["status"] == "failed" and "more --max-steps" in run["error"]
    assert (out / "policy.json").exists()
