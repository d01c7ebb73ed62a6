"""PPO and RLOO on the default model (SmolLM2-135M-Instruct): a few steps raise the reward over
the reference on held-out prompts. Minutes on a CPU: run under the heavy lock,

    flock /work/heavy.lock python -m pytest -m slow tests/test_policy_rl_slow.py
"""
import pytest

from policy.evaluate import PolicyEvalConfig, evaluate_policy
from harness.lora import LoraSettings
from policy.ppo import PPOConfig, train_ppo
from policy.rewards import length_reward
from policy.rloo import RLOOConfig, train_rloo

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Why is the sky blue?",
             "What is a prime number?", "How many legs does a spider have?",
             "What does a compiler do?", "Name a good book to read.", "What is photosynthesis?",
             "How far is the moon?", "What is the tallest mountain?", "What causes rain?",
             "Who wrote Hamlet?"]
TRAIN = [[{"role": "user", "content": q}] for q in QUESTIONS[:8]]
HELD_OUT = [[{"role": "user", "content": q}] for q in QUESTIONS[8:]]
# SmolLM2 answers these in 20+ words: a reward for answers of about 6 words (and the penalty for
# answers cut at the length limit) is something a few steps can move
REWARD = length_reward(6)


def check_beats_reference(run_dir, tmp_path):
    cfg = PolicyEvalConfig(batch_size=4)
    cfg.sampling.max_new_tokens = 32
    result = evaluate_policy(str(run_dir), HELD_OUT, REWARD, tmp_path / "eval", cfg)
    assert result["reward_policy"] > result["reward_reference"], result
    assert result["length_policy"] < result["length_reference"], result
    assert 0 < result["kl"] < 50, result


def test_ppo_on_smollm2_beats_the_reference(tmp_path):
    cfg = PPOConfig(lr=1e-3, batch_size=4, minibatch_size=2, max_steps=6, save_every=0,
                    lora=LoraSettings(r=8, alpha=16))
    cfg.sampling.max_new_tokens = 32
    run = train_ppo(cfg, TRAIN, REWARD, tmp_path / "ppo")
    check_beats_reference(run, tmp_path)


def test_rloo_on_smollm2_beats_the_reference(tmp_path):
    cfg = RLOOConfig(lr=1e-3, batch_size=2, k=4, max_steps=6, save_every=0,
                     lora=LoraSettings(r=8, alpha=16))
    cfg.sampling.max_new_tokens = 32
    run = train_rloo(cfg, TRAIN, REWARD, tmp_path / "rloo")
    check_beats_reference(run, tmp_path)
