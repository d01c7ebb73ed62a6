"""PPO with a tiny in-test LM and a programmatic reward (+1 per marker word)."""
import json

import torch
from safetensors.torch import load_file

from annotate.runlog import read_metrics, read_run
from policy.lm import load_policy
from policy.ppo import PPOConfig, train_ppo
from policy.rewards import keyword_reward
from policy_helpers import TINY_LORA, mean, metric_series, tiny_prompts
from tiny_models import MARKERS


def tiny_config(model, **overrides) -> PPOConfig:
    cfg = PPOConfig(model=str(model), lora=TINY_LORA, batch_size=8, minibatch_size=4, lr=3e-2,
                    beta=0.1, save_every=1000, seed=0)
    cfg.sampling.max_new_tokens = 6
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_ppo_raises_the_reward_while_kl_stays_bounded(tiny_policy, tmp_path):
    # adaptive β with a small target: the controller must push β up as the policy drifts
    cfg = tiny_config(tiny_policy, max_steps=16, kl_target=1.0, kl_horizon=200)
    train_ppo(cfg, tiny_prompts(), keyword_reward(MARKERS), tmp_path)
    rows = read_metrics(tmp_path)
    reward, kl, beta = (metric_series(rows, n) for n in ("reward", "kl", "beta"))
    assert len(reward) == 16
    # a random 150-word policy says a marker in ~8% of 6-token answers
    assert mean(reward[:3]) < 0.5
    assert mean(reward[-4:]) > mean(reward[:3]) + 1.0
    # KL per response (nats) stays finite and within what the reward can pay for
    assert all(k == k for k in kl) and max(kl) < 6 * 1.0 / cfg.beta
    assert beta[-1] > beta[0]
    run = read_run(tmp_path)
    assert run["status"] == "done" and run["kind"] == "ppo"
    assert run["summary"]["reward_last"] > run["summary"]["reward_first"]
    for name in ("pg_loss", "vf_loss", "clipfrac", "approx_kl", "response_len"):
        assert len(metric_series(rows, name)) == 16
    # the artifact: a policy run folder that load_policy reads back
    assert json.loads((tmp_path / "policy.json").read_text())["base"] == str(tiny_policy)
    model, tok = load_policy(str(tmp_path))
    assert (tmp_path / "value_head.pt").exists()


def test_ppo_resume_replays_the_uninterrupted_run(tiny_policy, tmp_path):
    prompts, reward = tiny_prompts(8), keyword_reward(MARKERS)
    train_ppo(tiny_config(tiny_policy, max_steps=3), prompts, reward, tmp_path / "straight")
    train_ppo(tiny_config(tiny_policy, max_steps=2), prompts, reward, tmp_path / "resumed")
    train_ppo(tiny_config(tiny_policy, max_steps=3), prompts, reward, tmp_path / "resumed")
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    step3 = lambda d: [r["value"] for r in read_metrics(d) if r["step"] == 3 and r["name"] == "reward"]
    assert step3(tmp_path / "straight") == step3(tmp_path / "resumed")
    assert "resumed from step 2" in (tmp_path / "resumed" / "log.txt").read_text()


def test_ppo_critic_on_its_own_adapter(tiny_policy, tmp_path):
    cfg = tiny_config(tiny_policy, max_steps=2, critic="adapter")
    train_ppo(cfg, tiny_prompts(8), keyword_reward(MARKERS), tmp_path)
    policy = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    critic = load_file(tmp_path / "adapter" / "critic" / "adapter_model.safetensors")
    # LoRA's B matrices start at zero: both adapters moved, and they moved differently
    moved = lambda w: any(v.abs().sum() > 0 for k, v in w.items() if "lora_B" in k)
    assert moved(policy) and moved(critic)
    assert any(not torch.equal(policy[k], critic[k]) for k in policy if k in critic)
    assert len(metric_series(read_metrics(tmp_path), "vf_loss")) == 2
