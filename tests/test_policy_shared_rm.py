"""A reward model trained on the policy's base is loaded INTO the policy (one more adapter +
head), so PPO keeps one base model in memory, and scores exactly as the stand-alone copy."""
import torch

from annotate.runlog import read_run
from policy.lm import LoraSettings, load_policy
from policy.ppo import PPOConfig, train_ppo
from policy.rewards import SharedBaseReward, load_reward
from policy_helpers import TINY_LORA, tiny_prompts
from rewardmodel.model import RewardModel


def shared_base_rm(base, folder):
    """A reward model on ``base``'s weights: its own LoRA adapter (random, non-zero) + head."""
    from peft import LoraConfig
    model, tok = load_policy(str(base), lora=LoraSettings(r=4, alpha=8), trainable=True)
    model.add_adapter("reward", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    rm = RewardModel.on_backbone(model, tok, adapter="reward", spec=str(base))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.reward" in name:
                p.normal_(0, 0.3)
    rm.save(folder)
    return folder


def test_shared_base_reward_scores_like_the_standalone_model(tiny_policy, tmp_path):
    folder = shared_base_rm(tiny_policy, tmp_path / "rm")
    reward_fn, name = load_reward(rm=str(folder))
    assert isinstance(reward_fn, SharedBaseReward) and name.startswith("rm:")
    policy, tok = load_policy(str(tiny_policy), lora=TINY_LORA, trainable=True)
    with torch.no_grad():     # a policy adapter that changes the hidden states
        for name, p in policy.named_parameters():
            if "lora_B.default" in name:
                p.normal_(0, 0.3)
    n_before = sum(p.numel() for p in policy.parameters())
    reward_fn.bind(policy, tok)
    prompts = tiny_prompts(4)
    responses = ["the cat is happy", "zebra zebra", "no", "tell me a long story about the sun"]
    shared = reward_fn(prompts, responses)
    standalone = RewardModel.load(folder).score(prompts, responses)
    torch.testing.assert_close(shared, standalone, atol=1e-5, rtol=1e-5)
    # no second base: binding added the reward adapter's LoRA matrices and nothing else
    added = sum(p.numel() for p in policy.parameters()) - n_before
    lora = sum(p.numel() for n, p in policy.named_parameters() if ".reward." in n)
    assert added == lora > 0
    assert policy.active_adapter == "default"


def test_ppo_with_a_reward_model_on_the_policys_base(tiny_policy, tmp_path):
    folder = shared_base_rm(tiny_policy, tmp_path / "rm")
    reward_fn, _ = load_reward(rm=str(folder))
    cfg = PPOConfig(model=str(tiny_policy), lora=TINY_LORA, batch_size=4, minibatch_size=2,
                    max_steps=2, lr=1e-2, save_every=0)
    cfg.sampling.max_new_tokens = 5
    train_ppo(cfg, tiny_prompts(4), reward_fn, tmp_path / "ppo")
    assert read_run(tmp_path / "ppo")["status"] == "done"
