"""SFT, rejection sampling and DPO on the real default model (SmolLM2-135M-Instruct).

Minutes, not seconds: run under the heavy lock,
    flock /work/heavy.lock python -m pytest -m slow tests/test_policy_slow.py
The reward is programmatic (closeness to a short target length), so the check "the trained
policy beats the reference" needs no trained reward model.
"""
import pytest

from annotate.runlog import read_metrics
from annotate.trainingdata import PairExample, from_file
from policy.dpo import DPOConfig, train_dpo
from policy.generate import SamplingParams
from policy.lm import load_policy
from policy.measure import measure_policy
from policy.rewards import length_reward
from policy.rs import RSConfig, train_rs
from policy.sft import SFTConfig, train_sft

pytestmark = pytest.mark.slow

QUESTIONS = ["What is two plus two?", "Name a primary colour.", "What is the capital of France?",
             "Is the sun a star?", "How many legs does a cat have?", "What do bees make?",
             "What is the opposite of hot?", "Which planet do we live on?"]
SHORT = ["Four.", "Red.", "Paris.", "Yes, it is.", "Four legs.", "Honey.", "Cold.", "Earth."]
PROMPTS = [[{"role": "user", "content": q}] for q in QUESTIONS]
BRIEF = length_reward(3)       # −|words − 3| / 3: best at three words
SAMPLING = SamplingParams(max_new_tokens=40, temperature=0.7, top_p=0.95, seed=0)


def series(out, name):
    return [m["value"] for m in read_metrics(out) if m["name"] == name]


def test_sft_learns_short_answers(tmp_path):
    chats = [p + [{"role": "assistant", "content": a}] for p, a in zip(PROMPTS, SHORT)]
    out = train_sft(SFTConfig(lr=5e-4, batch_size=4, max_steps=12, save_every=0), chats, tmp_path / "sft")
    losses = series(out, "loss")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    model, tok = load_policy(str(out))
    base, _ = load_policy()
    assert measure_policy(model, tok, PROMPTS, BRIEF, SAMPLING)["reward"] > \
        measure_policy(base, tok, PROMPTS, BRIEF, SAMPLING)["reward"]


def test_rejection_sampling_beats_the_reference(tmp_path):
    config = RSConfig(k=4, rounds=2, max_steps=16, lr=3e-4, batch_size=4, save_every=0,
                      sampling=SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.95))
    out = train_rs(config, PROMPTS, BRIEF, tmp_path / "rs", scorer="reward:length:3")
    rounds, final = series(out, "reward"), series(out, "final_reward")[0]
    assert final > rounds[0], (rounds, final)
    assert series(out, "final_kl")[0] < 50


def held_out_margins(model, tok, pairs, config):
    """β·[(log π − log π_ref)(chosen) − (log π − log π_ref)(rejected)] per pair: DPO's
    implicit reward margin, on pairs the policy never trained on."""
    import torch
    from policy.dpo import collate_pairs, sequence_logps, tokenize_pair
    from policy.lm import reference
    batch = collate_pairs([{**tokenize_pair(tok, p, config), "index": i} for i, p in enumerate(pairs)],
                          tok.pad_token_id)
    with torch.no_grad():
        chosen, rejected = sequence_logps(model, batch)
        with reference(model):
            ref_chosen, ref_rejected = sequence_logps(model, batch)
    return config.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))


def test_dpo_prefers_the_chosen_style_over_the_reference(tmp_path):
    """DPO raises the implicit reward margin on its training pairs, and the preference
    generalises: on held-out questions with a different rambling reply the trained policy
    prefers the short answer more than the reference does (margin > 0)."""
    rambling = ("Well, that is a really interesting question and there are many things to say "
                "about it, so let me explain in some detail before I give you the answer.")
    pairs = [PairExample(prompt=p, chosen=a, rejected=rambling) for p, a in zip(PROMPTS, SHORT)]
    config = DPOConfig(lr=2e-4, beta=0.1, batch_size=4, max_steps=12, save_every=0)
    out = train_dpo(config, pairs, tmp_path / "dpo")
    margins = series(out, "reward_margin")
    assert margins[-1] > margins[0] + 0.5
    model, tok = load_policy(str(out))
    other_rambling = ("Oh, what a fascinating thing to ask! There is so much history and nuance "
                      "here that I would like to walk you through it step by step first.")
    held_out = [PairExample(prompt=[{"role": "user", "content": q}], chosen=a, rejected=other_rambling)
                for q, a in [("What colour is the sky on a clear day?", "Blue."),
                             ("How many days are in a week?", "Seven."),
                             ("What is frozen water called?", "Ice."),
                             ("What animal says moo?", "A cow.")]]
    assert held_out_margins(model, tok, held_out, config).mean() > 0.5
    after = measure_policy(model, tok, PROMPTS, BRIEF, SAMPLING)
    assert 0 < after["kl"] < 50   # the policy moved, but stayed near the reference


def test_dpo_on_real_preference_data(hh_file, tmp_path):
    pairs = [p for p in from_file(hh_file).pairs if len(p.chosen) + len(p.rejected) < 400][:16]
    out = train_dpo(DPOConfig(lr=2e-4, batch_size=4, max_steps=8, save_every=0,
                              max_prompt_len=256, max_response_len=128), pairs, tmp_path / "hh")
    margins = series(out, "reward_margin")
    assert sum(margins[-4:]) / 4 > sum(margins[:4]) / 4
