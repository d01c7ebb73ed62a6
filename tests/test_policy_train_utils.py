"""harness.run under a policy (policy.train_utils): sharding, checkpoint + resume equals an uninterrupted run, config checks."""
import json

import pytest
import torch

from annotate.runlog import read_metrics, read_run
from harness.lora import LoraSettings
from harness.run import shard_batches
from policy.lm import load_policy, token_logprobs
from policy.train_utils import PolicyRun, PolicySettings, load_for_training

TEXTS = ["hello how are you", "write a short poem about the sun", "tell me about cats and dogs",
         "python code to sort a list", "thanks that is helpful", "what is the moon"]


def test_shards_cover_the_data_and_agree_across_processes():
    plans = [shard_batches(10, 2, epoch=3, seed=7, rank=r, world=3) for r in range(3)]
    assert [len(p) for p in plans] == [2, 2, 2]               # ceil(10/3)=4 each → 2 batches
    seen = [i for plan in plans for batch in plan for i in batch]
    assert set(seen) == set(range(10)) and len(seen) == 12     # two wrapped around
    assert shard_batches(10, 2, 3, 7) == shard_batches(10, 2, 3, 7)
    assert shard_batches(10, 2, 3, 7) != shard_batches(10, 2, 4, 7)   # a new order each epoch


def _train(tiny_lm, out, max_steps, save_every=2, gradient_checkpointing=False):
    cfg = PolicySettings(model=str(tiny_lm), lr=5e-3, batch_size=2, grad_accum=2,
                        max_steps=max_steps, save_every=save_every, seed=3,
                        gradient_checkpointing=gradient_checkpointing,
                        lora=LoraSettings(r=4, alpha=8))
    model, tok = load_for_training(cfg)
    tok.padding_side = "right"
    data = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]

    def collate(rows):
        enc = tok.pad({"input_ids": rows}, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    with PolicyRun(cfg, out, "sft", model, tok) as run:
        batches = run.batches(data, collate)
        while not run.done:
            for ids, mask in run.accumulate(batches):
                logp = token_logprobs(run.model, ids, mask)                  # [B, T-1]
                loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
                run.backward(loss)
            run.optimizer_step()
            run.metric(loss=loss.item())
            run.maybe_checkpoint()
        run.finish()
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_resume_continues_exactly_where_it_stopped(tiny_lm, tmp_path):
    straight = _train(tiny_lm, tmp_path / "straight", max_steps=4)
    _train(tiny_lm, tmp_path / "resumed", max_steps=2)       # "crash" after step 2
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 2
    first_id = read_run(tmp_path / "resumed")["id"]
    resumed = _train(tiny_lm, tmp_path / "resumed", max_steps=4)
    for name, value in straight.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name
    run = read_run(tmp_path / "resumed")
    assert run["status"] == "done" and run["summary"]["steps"] == 4
    assert run["id"] == first_id   # the resumed run continues the same run, not a new one
    assert run["id"] != read_run(tmp_path / "straight")["id"]
    losses = [m["value"] for m in read_metrics(tmp_path / "straight") if m["name"] == "loss"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (tmp_path / "straight/adapter/adapter_config.json").exists()


def test_resume_with_a_different_config_is_refused(tiny_lm, tmp_path):
    _train(tiny_lm, tmp_path / "run", max_steps=1)
    cfg = PolicySettings(model=str(tiny_lm), lr=1.0, lora=LoraSettings(r=4, alpha=8))
    model, tok = load_policy(cfg.model, lora=cfg.lora, trainable=True)
    with pytest.raises(ValueError, match="different config.*lr"):
        PolicyRun(cfg, tmp_path / "run", "sft", model, tok)


def test_gradient_checkpointing_changes_memory_not_results(tiny_lm, tmp_path):
    plain = _train(tiny_lm, tmp_path / "plain", max_steps=2)
    checkpointed = _train(tiny_lm, tmp_path / "gc", max_steps=2, gradient_checkpointing=True)
    for name, value in plain.items():
        assert torch.allclose(value, checkpointed[name], atol=1e-6), name
    assert read_run(tmp_path / "gc")["config"]["gradient_checkpointing"] is True
