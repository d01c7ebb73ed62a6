"""Reward-model training on tiny real models: learning, resume after a crash, two processes, export."""
import argparse
import json
import subprocess
from pathlib import Path

import pytest
import torch

from annotate.runlog import read_metrics, read_run
from harness.lora import LoraSettings
from harness.run import CHECKPOINT_DIR, STATE_FILE, seed_everything
from launch_helpers import env, launch_cmd
from rm_synthetic import marker_data, weights_checksum
from rewardmodel.evaluate import evaluate
from rewardmodel.model import RewardModel
from rewardmodel.train import RMConfig, train

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "rm_synthetic.py"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backbone", ["tiny_lm", "tiny_bert"])
def test_tiny_model_learns_marker_preference(backbone, request, tmp_path):
    base = str(request.getfixturevalue(backbone))
    config = RMConfig(out=str(tmp_path / "run"), base=base, max_length=48, lora_r=8, lr=1e-2,
                      batch_size=8, epochs=2, eval_every=20, log_every=5)
    summary = train(config, marker_data(300, seed=1, rankings=40))
    assert summary["steps"] == summary["total_steps"] > 0

    losses = [m["value"] for m in read_metrics(tmp_path / "run") if m["name"] == "loss"]
    assert losses[-1] < 0.5 * losses[0]  # the loss went down
    rm = RewardModel.load(tmp_path / "run")  # the saved (best) model, on fresh held-out data
    result = evaluate(rm, marker_data(200, seed=99))
    assert result["accuracy"] >= 0.95, result
    assert read_run(tmp_path / "run")["status"] == "done"
    # the reward's scale, measured on the held-out responses with the kept model
    assert rm.reward_stats["on"] == "held-out" and rm.reward_stats["std"] > 0
    assert rm.reward_stats["n"] >= 2 * summary["eval_comparisons"] > 0


def test_the_default_command_is_the_measured_recipe_and_it_learns(tiny_bert, tmp_path):
    """`train rm --data F --out DIR` with nothing else: MiniLM, LoRA on every linear layer (the
    pooler's too), lr 2e-4, two epochs, 256 tokens (docs/rm-recipes.md). The old defaults (LoRA
    on q, v only, the pooler frozen) kept the HH loss at log 2."""
    from cli import parse_command
    args = parse_command(["train", "rm", "--data", "f.jsonl", "--out", str(tmp_path / "run")])
    config = RMConfig.from_args(args)
    assert config == RMConfig(out=str(tmp_path / "run"))
    assert (config.base, config.lora_targets, config.lr, config.epochs, config.max_length) == (
        "minilm", "all-linear", 2e-4, 2.0, 256)

    config.base = str(tiny_bert)   # the same recipe on a tiny encoder and a synthetic preference
    train(config, marker_data(300, seed=1))
    result = evaluate(RewardModel.load(tmp_path / "run"), marker_data(200, seed=99))
    assert result["accuracy"] >= 0.7, result   # chance is 0.5


class Crash(RuntimeError):
    pass


def _crash_on_forward(n: int):
    """A forward pre-hook that raises on the model's n-th forward pass: a crash at a known
    point of the run, the same every time (no timing)."""
    calls = [0]

    def hook(module, args, kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Crash(f"simulated crash at forward pass {n}")
    return hook


def _resumable_run(base, out, data, crash_at: int | None = None) -> tuple[dict, RewardModel]:
    config = RMConfig(out=str(out), base=base, max_length=48, lora_r=8, lr=3e-3, batch_size=8,
                      max_steps=30, eval_every=5, save_every=5, log_every=5, eval_fraction=0.1)
    seed_everything(config.seed)
    model = RewardModel.from_spec(base, max_length=48, lora=config.lora())
    if crash_at:
        model.register_forward_pre_hook(_crash_on_forward(crash_at), with_kwargs=True)
    return train(config, data, model=model), model


def test_resume_after_a_crash_continues_exactly_where_it_stopped(tiny_lm, tmp_path):
    data = marker_data(240, seed=4)
    straight, straight_model = _resumable_run(str(tiny_lm), tmp_path / "straight", data)

    out = tmp_path / "run"
    # steps 1-10 take 10 training passes and two evaluations of 2 passes each: pass 17 falls
    # in step 13, after the checkpoint of step 10
    with pytest.raises(Crash):
        _resumable_run(str(tiny_lm), out, data, crash_at=17)
    crashed = read_run(out)
    assert crashed["status"] == "failed"   # what a crash leaves behind
    assert json.loads((out / CHECKPOINT_DIR / STATE_FILE).read_text())["step"] == 10

    resumed, resumed_model = _resumable_run(str(tiny_lm), out, data)
    assert "resumed from step 10" in (out / "log.txt").read_text()
    assert resumed["run_id"] == crashed["id"] != straight["run_id"]
    assert resumed["steps"] == straight["steps"] == 30
    # weights, optimizer, schedule, data position, RNG and best evaluation all came back:
    # the resumed run ends where the uninterrupted one did
    assert weights_checksum(resumed_model) == pytest.approx(weights_checksum(straight_model), rel=1e-6)
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-5)
    assert resumed["best_eval_accuracy"] == straight["best_eval_accuracy"]
    losses = [m for m in read_metrics(out) if m["name"] == "loss"]
    assert [m["step"] for m in losses][-4:] == [15, 20, 25, 30]


def test_a_checkpoint_of_another_config_is_refused(tiny_lm, tmp_path):
    data = marker_data(60, seed=5)
    config = RMConfig(out=str(tmp_path / "run"), base=str(tiny_lm), max_length=48, lora_r=8,
                      batch_size=8, max_steps=2, eval_fraction=0)
    train(config, data)
    with pytest.raises(ValueError, match="different config.*lr"):
        train(RMConfig(**{**config.to_dict(), "lr": 1.0, "max_steps": 4}), data)
    with pytest.raises(ValueError, match="different config.*data"):
        train(RMConfig(**{**config.to_dict(), "max_steps": 4}), marker_data(60, seed=6))
    summary = train(RMConfig(**{**config.to_dict(), "lr": 1.0, "max_steps": 4, "resume": False}), data)
    assert summary["steps"] == 4   # --no-resume: started over


def test_rm_config_from_json_and_command_line_options(tmp_path):
    config_file = tmp_path / "rm.json"
    config_file.write_text(json.dumps({"lr": 0.5, "batch_size": 2, "lora_targets": ["q_proj"]}))
    args = argparse.Namespace(config=str(config_file), out="o", batch_size=3, lr=None,
                              full_finetune=True, no_resume=True, save_every=7,
                              margin_values='{"better": 0.5}')
    config = RMConfig.from_args(args)   # options absent from args count as not given
    assert (config.lr, config.batch_size, config.lora_r, config.lora_targets) == (0.5, 3, 0, ["q_proj"])
    assert (config.resume, config.save_every, config.margin_values) == (False, 7, {"better": 0.5})
    assert RMConfig.from_dict(config.to_json()) == config          # what run.json stores
    config_file.write_text(json.dumps({"lr": 0.5, "bogus": 1}))
    with pytest.raises(ValueError, match="unknown RMConfig field.*bogus"):
        RMConfig.from_args(args)
    with pytest.raises(ValueError, match="eval_fraction"):
        RMConfig.from_args(argparse.Namespace(out="o", eval_fraction=1.0))
    with pytest.raises(ValueError, match="margin-values"):
        RMConfig.from_args(argparse.Namespace(out="o", margin_values="[1, 2]"))


def test_two_processes_train_one_model(tiny_lm, tmp_path):
    out = tmp_path / "ddp"
    cmd = launch_cmd(2) + [str(SCRIPT), "--base", str(tiny_lm), "--out", str(out), "--steps", "12",
           "--eval-every", "6", "--batch-size", "4", "--grad-accum", "2"]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    assert ranks[0]["summary"]["processes"] == 2
    # each rank saw different micro-batches; identical weights after 12 steps means the
    # gradients were averaged across ranks before every optimizer step
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6, abs=1e-6)
    fresh = RewardModel.from_spec(str(tiny_lm), max_length=48,
                                  lora=RMConfig(lora_r=8).lora())
    assert weights_checksum(fresh) != pytest.approx(ranks[0]["checksum"], rel=1e-6)  # it trained
    # one run folder, written by rank 0 only
    metrics = read_metrics(out)
    assert len([m for m in metrics if m["name"] == "loss"]) == len({m["step"] for m in metrics
                                                                    if m["name"] == "loss"})
    assert read_run(out)["status"] == "done"


def _plain_score(kind: str, base: Path, run_dir: Path, prompt: list[dict], response: str) -> float:
    """The docs/rewardmodel.md recipe, verbatim: plain transformers + peft, no prefstudio."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, pad_token_id=tok.pad_token_id)
    model = PeftModel.from_pretrained(model, run_dir / "adapter").eval()
    if kind == "decoder":   # chat template: the prompt plus the response as the assistant turn
        text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                       tokenize=False)
        inputs = tok(text, add_special_tokens=False, return_tensors="pt")
    else:                   # encoder: "role: content" lines, then the response as segment two
        context = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
        inputs = tok(context, response, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0, 0].item()


@pytest.mark.parametrize("backbone", ["tiny_lm", "tiny_bert"])
def test_export_loads_in_plain_transformers_and_peft(backbone, request, tmp_path):
    base = request.getfixturevalue(backbone)
    config = RMConfig(out=str(tmp_path / "run"), base=str(base), max_length=64, lora_r=8,
                      lr=1e-2, batch_size=8, max_steps=15, eval_fraction=0)
    train(config, marker_data(120, seed=2))
    rm = RewardModel.load(tmp_path / "run")
    info = json.loads((tmp_path / "run" / "rm.json").read_text())
    assert info["kind"] == rm.kind and (tmp_path / "run" / "adapter" / "adapter_config.json").exists()

    data = marker_data(6, seed=3)
    prompts = [p.prompt for p in data.pairs] * 2
    responses = [p.chosen for p in data.pairs] + [p.rejected for p in data.pairs]
    ours = rm.score(prompts, responses, batch_size=4)
    plain = torch.tensor([_plain_score(rm.kind, base, tmp_path / "run", p, r)
                          for p, r in zip(prompts, responses)])
    assert torch.allclose(ours, plain, atol=1e-4), (ours, plain)
    assert ours.std() > 1e-3  # a trained head, not a constant


def test_reward_head_on_the_policy_backbone_shares_weights_and_trains_its_own_adapter(
        tiny_lm, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm)
    policy = get_peft_model(lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    policy.add_adapter("reward", LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    rm = RewardModel.on_backbone(policy, tok, max_length=48, adapter="reward", spec=str(tiny_lm))
    assert rm.model.model is lm.model  # one copy of the base weights

    names = [n for n, _ in rm.trainable_parameters()]
    assert names and all(".reward." in n or n.startswith("model.score") for n in names)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if ".reward." not in n}
    mine = {n: p.detach().clone() for n, p in rm.trainable_parameters()}
    train(RMConfig(out=str(tmp_path / "run"), base=str(tiny_lm), max_length=48, lr=1e-2,
                   batch_size=8, max_steps=40, eval_fraction=0), marker_data(300, seed=8), model=rm)

    assert policy.active_adapter == "default"  # the policy's own adapter is back on
    for n, p in policy.named_parameters():
        if ".reward." not in n:  # base and policy adapter untouched
            assert torch.equal(p, frozen[n]), n
    assert all(not torch.equal(p, mine[n]) for n, p in rm.trainable_parameters())
    result = evaluate(rm, marker_data(100, seed=98))
    assert result["accuracy"] >= 0.9, result

    loaded = RewardModel.load(tmp_path / "run")  # standalone: base + adapter + head.pt
    data = marker_data(5, seed=9)
    prompts, responses = [p.prompt for p in data.pairs], [p.chosen for p in data.pairs]
    assert torch.allclose(loaded.score(prompts, responses), rm.score(prompts, responses), atol=1e-5)


def test_early_stopping_and_full_finetuning(tiny_lm, tmp_path):
    # lr 0: the held-out accuracy can never improve, so patience 2 stops at the 3rd evaluation
    summary = train(RMConfig(out=str(tmp_path / "stuck"), base=str(tiny_lm), max_length=48,
                             lr=0.0, batch_size=8, max_steps=50, eval_every=5, patience=2,
                             warmup_ratio=0), marker_data(120, seed=10))
    assert summary["stopped_early"] and summary["steps"] == 15
    assert "early stop at step 15" in (tmp_path / "stuck" / "log.txt").read_text()

    # lora_r 0: every weight trains, the run folder holds a full model
    out = tmp_path / "full"
    train(RMConfig(out=str(out), base=str(tiny_lm), max_length=48, lora_r=0, lr=1e-3,
                   batch_size=8, max_steps=30, eval_fraction=0), marker_data(200, seed=11))
    assert (out / "model" / "config.json").exists() and not (out / "adapter").exists()
    rm = RewardModel.load(out)
    assert rm.lora is None
    assert evaluate(rm, marker_data(100, seed=97))["accuracy"] >= 0.9


def test_gradient_checkpointing_gives_the_same_training(tiny_lm, tmp_path):
    # recomputing activations in the backward pass changes memory, not the math: the same
    # seed and data give the same losses
    runs = {}
    for flag in (False, True):
        out = tmp_path / f"gc-{flag}"
        torch.manual_seed(0)
        rm = RewardModel.from_spec(str(tiny_lm), max_length=48, lora=LoraSettings(r=8))
        train(RMConfig(out=str(out), base=str(tiny_lm), max_length=48, lr=1e-2, batch_size=8,
                       max_steps=6, eval_fraction=0, log_every=1, gradient_checkpointing=flag),
              marker_data(80, seed=12), model=rm)
        assert rm.model.get_base_model().is_activation_checkpointing == flag
        runs[flag] = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
    assert len(runs[True]) == 6 and runs[True][-1] < runs[True][0]
    assert runs[True] == pytest.approx(runs[False], abs=1e-5)
