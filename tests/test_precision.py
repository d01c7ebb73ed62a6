"""harness/precision.py: mixed precision (bf16 matrix products, fp32 weights, optimizer,
attention and reward head), the fused LoRA layer under autocast, and what ``auto`` picks."""
import copy
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from harness import fused_lora, precision
from harness.config import TrainSettings
from test_fused_lora import Net, outputs_and_grads


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: tiny models, one thread


def autocast_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_auto_is_bf16_only_where_the_hardware_makes_it_fast():
    cpu = torch.device("cpu")
    # the kernel's own list of the CPU's instructions, not torch's probes that the code uses
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs Linux's /proc/cpuinfo to know the CPU's instructions")
    flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.M)[1].split())
    bf16_instructions = bool(flags & {"amx_tile", "avx512_bf16"})
    assert precision.resolve("auto", cpu) == ("bf16" if bf16_instructions else "fp32")
    assert precision.resolve("auto", torch.device("mps")) == "fp32"
    assert precision.resolve("fp32", cpu) == "fp32" and precision.resolve("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        precision.resolve("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be auto, fp32 or bf16"):
        TrainSettings(precision="half").check()


def lora_net():
    torch.manual_seed(0)
    model = get_peft_model(Net(), LoraConfig(r=4, lora_alpha=12, target_modules=["up", "down"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return model


def test_fused_layer_under_autocast_matches_peft_under_autocast_and_keeps_fp32_gradients():
    """Both run the products in bf16; the fused layer is as close to the fp32 result as
    peft's own layer is (bf16 rounding, not a different function), and hands back fp32
    gradients for the fp32 input and adapter."""
    plain = lora_net()
    fused = copy.deepcopy(plain)
    assert fused_lora.install(fused) == 2
    x = torch.randn(3, 5, 8)
    y, gx, g = outputs_and_grads(plain, x)                 # fp32: the reference
    with autocast_bf16():
        y0, gx0, g0 = outputs_and_grads(plain, x)
        y1, gx1, g1 = outputs_and_grads(fused, x)
    assert y1.dtype == y0.dtype == torch.bfloat16          # the products ran in bf16 ...
    assert gx1.dtype == torch.float32                      # ... the gradients come back fp32
    assert set(g1) == set(g0) == set(g) and len(g) == 4
    pairs = [(y, y0, y1), (gx, gx0, gx1)] + [(g[n], g0[n], g1[n]) for n in g]
    for ref, peft_bf16, fused_bf16 in pairs:
        assert fused_bf16.dtype == ref.dtype or fused_bf16 is y1
        peft_err = (peft_bf16.float() - ref).abs().max()
        fused_err = (fused_bf16.float() - ref).abs().max()
        assert 0 < fused_err <= 2 * peft_err + 1e-3 * ref.abs().max()
        assert (fused_bf16.float() - ref).norm() <= 0.02 * ref.norm()   # bf16: ~3 digits


def test_the_frozen_weights_bf16_copy_is_made_once_and_renewed_when_they_change():
    model = lora_net()
    fused_lora.install(model)
    up = model.base_model.model.up.base_layer
    x = torch.randn(4, 8)
    with autocast_bf16():
        model(x)
        first = up.__dict__["_prefstudio_lowp"][1]
        model(x)
        assert up.__dict__["_prefstudio_lowp"][1] is first          # reused, not re-cast
        assert first.dtype == torch.bfloat16 and torch.equal(first, up.weight.bfloat16())
        with torch.no_grad():
            up.weight.add_(1.0)                                     # a load or merge changes them
        model(x)
        renewed = up.__dict__["_prefstudio_lowp"][1]
    assert renewed is not first and torch.equal(renewed, up.weight.bfloat16())
    assert "_prefstudio_lowp" not in "".join(model.state_dict())   # never saved


def tiny_bert_model(folder):
    from transformers import AutoModel
    return AutoModel.from_pretrained(folder, attn_implementation="sdpa")


def test_attention_runs_in_fp32_inside_autocast_and_gives_the_same_states(tiny_bert):
    model = tiny_bert_model(tiny_bert).eval()
    ids = torch.randint(5, 40, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0                                                   # padding is still masked
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
    seen = []
    original = precision.sdpa_fp32

    def spy(module, q, k, v, m, **kw):
        out = original(module, q, k, v, m, **kw)
        seen.append((q.dtype, out[0].dtype))
        return out

    assert precision.attention_in_fp32(model) == 1
    assert model.config._attn_implementation == precision.FP32_ATTENTION
    from transformers import AttentionInterface
    AttentionInterface.register(precision.FP32_ATTENTION, spy)
    try:
        with torch.no_grad(), autocast_bf16():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        AttentionInterface.register(precision.FP32_ATTENTION, original)
    assert seen and all(q == torch.bfloat16 and o == torch.bfloat16 for q, o in seen)
    torch.testing.assert_close(out.float()[mask.bool()], ref[mask.bool()], rtol=5e-2, atol=5e-2)


def test_sdpa_fp32_upcasts_on_the_cpu():
    """The kernel itself: bf16 q, k, v in, the fp32 kernel's result (rounded to bf16) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Attn(torch.nn.Module):
        is_causal = False
        training = False
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    want, _ = sdpa_attention_forward(Attn(), q, k, v, None, dropout=0.0, scaling=None)
    with autocast_bf16():
        got, _ = precision.sdpa_fp32(Attn(), q.bfloat16(), k.bfloat16(), v.bfloat16(), None,
                                     dropout=0.0, scaling=None)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)
    # exactly the fp32 kernel on the bf16-rounded inputs (a bf16 kernel rounds differently)
    up, _ = sdpa_attention_forward(Attn(), q.bfloat16().float(), k.bfloat16().float(),
                                   v.bfloat16().float(), None, dropout=0.0, scaling=None)
    assert torch.equal(got, up.bfloat16())


def test_the_reward_head_is_computed_in_fp32_under_autocast(tiny_bert):
    from harness.lora import LoraSettings
    from rewardmodel.model import RewardModel, _head

    rm = RewardModel.from_spec(str(tiny_bert), max_length=32, lora=LoraSettings(r=4, alpha=8))
    dtypes = []
    head = _head(rm.model)
    inner = head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head
    inner.register_forward_hook(lambda m, i, o: dtypes.append((i[0].dtype, o.dtype)))
    batch = rm.collate(rm.encode([[{"role": "user", "content": "hi"}]] * 2, ["yes", "no thanks"]))
    with autocast_bf16():
        rewards = rm(**batch)
    assert dtypes == [(torch.float32, torch.float32)] and rewards.dtype == torch.float32
    assert rewards[0] != rewards[1]


def test_the_precision_option_reaches_every_stage_and_bad_values_are_refused(tmp_path):
    from cli import parse_command
    from cli.train import policy_config
    from rewardmodel.train import RMConfig

    rm = lambda *extra: RMConfig.from_args(parse_command(
        ["train", "rm", "--data", "f.jsonl", "--out", str(tmp_path), *extra]))
    assert rm().precision == "auto"                       # the reward model: bf16 where fast
    assert rm("--precision", "fp32").precision == "fp32"
    dpo = lambda *extra: policy_config(parse_command(
        ["train", "dpo", "--data", "f.jsonl", "--out", str(tmp_path), *extra]))
    assert dpo().precision == "auto"                      # measured: same margins, 1.3x
    assert dpo("--precision", "fp32").precision == "fp32"
    sft = policy_config(parse_command(["train", "sft", "--data", "f.jsonl", "--out", str(tmp_path)]))
    assert sft.precision == "auto"                        # measured: the same held-out NLL
    rs = policy_config(parse_command(["train", "rs", "--prompts", "p.jsonl", "--rm", "r",
                                      "--out", str(tmp_path)]))
    assert rs.precision == "fp32"                         # the other stages: not measured yet
    with pytest.raises(ValueError, match="invalid choice: 'fp16'"):
        parse_command(["train", "rm", "--data", "f", "--out", "o", "--precision", "fp16"])


def test_a_bf16_reward_model_learns_what_an_fp32_one_learns_and_the_run_says_which(tiny_bert, tmp_path):
    """The same tiny training in both precisions: both learn the marker preference, and
    run.json records the precision the run used (``auto`` resolved)."""
    from annotate.runlog import read_metrics, read_run
    from rm_synthetic import marker_data
    from rewardmodel.evaluate import evaluate
    from rewardmodel.model import RewardModel
    from rewardmodel.train import RMConfig, train

    results = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / prec
        config = RMConfig(out=str(out), base=str(tiny_bert), max_length=48, lora_r=8, lr=1e-2,
                          batch_size=8, epochs=2, eval_every=20, log_every=5, precision=prec)
        train(config, marker_data(300, seed=1, rankings=40))
        losses = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
        assert losses[-1] < 0.5 * losses[0], (prec, losses)
        assert read_run(out)["summary"]["precision"] == prec
        results[prec] = evaluate(RewardModel.load(out), marker_data(200, seed=99))["accuracy"]
    assert results["bf16"] >= 0.95 and results["fp32"] >= 0.95, results
