"""RLOO with a tiny in-test LM and a programmatic reward (+1 per marker word)."""
import pytest
import torch
from safetensors.torch import load_file

from annotate.runlog import read_metrics, read_run
from policy.evaluate import PolicyEvalConfig, evaluate_policy
from policy.rewards import keyword_reward
from policy.rloo import RLOOConfig, train_rloo
from policy_helpers import TINY_LORA, mean, metric_series, tiny_prompts
from tiny_models import MARKERS


def tiny_config(model, **overrides) -> RLOOConfig:
    cfg = RLOOConfig(model=str(model), lora=TINY_LORA, batch_size=2, grad_accum=2, k=4,
                     lr=2e-2, beta=0.1, save_every=1000, seed=0)
    cfg.sampling.max_new_tokens = 6
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_rloo_raises_the_reward_while_kl_stays_bounded(tiny_policy, tmp_path):
    cfg = tiny_config(tiny_policy, max_steps=24)
    train_rloo(cfg, tiny_prompts(), keyword_reward(MARKERS), tmp_path)
    rows = read_metrics(tmp_path)
    reward, kl = metric_series(rows, "reward"), metric_series(rows, "kl")
    assert len(reward) == 24
    assert mean(reward[:3]) < 0.5
    assert mean(reward[-4:]) > mean(reward[:3]) + 1.0
    assert all(k == k for k in kl) and max(kl) < 6 * 1.0 / cfg.beta
    run = read_run(tmp_path)
    assert run["status"] == "done" and run["kind"] == "rloo"
    assert run["config"]["k"] == 4
    assert not (tmp_path / "value_head.pt").exists()        # no critic in RLOO
    # held-out prompts: the trained policy beats its reference (same base, adapter off)
    ecfg = PolicyEvalConfig(batch_size=8)
    ecfg.sampling.max_new_tokens = 6
    result = evaluate_policy(str(tmp_path), tiny_prompts(8, seed=1), keyword_reward(MARKERS),
                             tmp_path / "eval", ecfg)
    assert result["reward_policy"] > result["reward_reference"] + 0.5
    assert result["win_rate"] > 0.5 and result["kl"] > 0


def test_rloo_baseline_cancels_a_constant_reward(tiny_policy, tmp_path):
    # every sample of a prompt gets the same reward → every leave-one-out advantage is 0 →
    # the gradient is exactly 0 and the adapter does not move
    constant = lambda prompts, responses: torch.full((len(responses),), 3.0)
    cfg = tiny_config(tiny_policy, max_steps=2, beta=0.0)
    cfg.shaping.missing_eos_penalty = 0.0
    train_rloo(cfg, tiny_prompts(4), constant, tmp_path)
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)
    assert metric_series(read_metrics(tmp_path), "advantage_abs") == [0.0, 0.0]


def test_rloo_refuses_k_below_two(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="k >= 2"):
        train_rloo(tiny_config(tiny_policy, k=1), tiny_prompts(4), keyword_reward(MARKERS), tmp_path)
    assert not tmp_path.joinpath("run.json").exists()
