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


def test_dpo_prefers_the_chosen_style_over_the_reference(tmp_path):
    rambling = ("Well, that is a really interesting question and there are many things to say "
                "about it, so let me explain in some detail before I give you the answer.")
    pairs = [PairExample(prompt=p, chosen=a, rejected=rambling) for p, a in zip(PROMPTS, SHORT)]
    out = train_dpo(DPOConfig(lr=2e-4, beta=0.1, batch_size=4, max_steps=12, save_every=0),
                    pairs, tmp_path / "dpo")
    margins = series(out, "reward_margin")
    assert margins[-1] > margins[0] + 0.5
    model, tok = load_policy(str(out))
    after = measure_policy(model, tok, PROMPTS, BRIEF, SAMPLING)
    base, _ = load_policy()
    assert after["reward"] > measure_policy(base, tok, PROMPTS, BRIEF, SAMPLING)["reward"]
    assert 0 < after["kl"] < 50


def test_dpo_on_real_preference_data(hh_file, tmp_path):
    pairs = [p for p in from_file(hh_file).pairs if len(p.chosen) + len(p.rejected) < 400][:16]
    out = train_dpo(DPOConfig(lr=2e-4, batch_size=4, max_steps=8, save_every=0,
                              max_prompt_len=256, max_response_len=128), pairs, tmp_path / "hh")
    margins = series(out, "reward_margin")
    assert sum(margins[-4:]) / 4 > sum(margins[:4]) / 4
