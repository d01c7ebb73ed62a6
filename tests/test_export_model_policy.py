"""`prefstudio export model` for a policy run: merged weights that plain transformers loads and
that generate exactly prefstudio's tokens; the adapter folder that peft loads on its base."""
import json
import shutil

import pytest
import torch

from cli import main
from harness.lora import LoraSettings
from policy.generate import SamplingParams, sample
from policy.lm import load_policy
from policy.sft import SFTConfig, train_sft

PROMPT = [{"role": "user", "content": "tell me a story about the moon"}]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy_run(tiny_policy, tmp_path_factory):
    """A 2-step LoRA SFT run, at a learning rate that moves the adapter well off zero."""
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": "zebra quokka zebra"}]
             for q in ["hello", "tell me a story", "write a poem", "what is the sun"]]
    config = SFTConfig(model=str(tiny_policy), lr=5e-2, batch_size=4, max_steps=2, save_every=0,
                       lora=LoraSettings(r=8, alpha=16))
    return train_sft(config, chats, tmp_path_factory.mktemp("policy") / "sft")


def _last_logits(model, tok, prompt=PROMPT):
    text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[0, -1]


def test_merged_export_loads_in_plain_transformers_and_generates_prefstudios_tokens(
        policy_run, tiny_policy, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert main(["export", "model", str(policy_run), "--out", str(out), "--json"]) == 0
    assert not (out / "adapter_config.json").exists()   # weights merged, no peft needed
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in config
    assert (out / "model.safetensors").exists()

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template  # the chat template travelled with the tokenizer
    ours, our_tok = load_policy(str(policy_run))
    base = AutoModelForCausalLM.from_pretrained(tiny_policy).eval()
    exported_logits = _last_logits(model, tok)
    assert torch.allclose(exported_logits, _last_logits(ours, our_tok), atol=1e-5)
    assert (exported_logits - _last_logits(base, tok)).abs().max() > 1e-2  # the LoRA is in it

    text = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_tensors="pt")
    plain = model.generate(**enc, do_sample=False, max_new_tokens=12)[0, enc["input_ids"].shape[1]:]
    roll = sample(ours, our_tok, [PROMPT], SamplingParams(temperature=0, max_new_tokens=12))
    assert len(plain) > 3 and plain.tolist() == roll.response_ids[0].tolist()

    gen = json.loads((out / "generation_config.json").read_text())
    defaults = SamplingParams()
    assert gen["do_sample"] is True and gen["temperature"] == defaults.temperature
    assert gen["top_p"] == defaults.top_p and gen["top_k"] == 0
    assert gen["max_new_tokens"] == defaults.max_new_tokens
    assert tok.eos_token_id in gen["eos_token_id"]
    assert "apply_chat_template" in (out / "README.md").read_text()


def test_adapter_export_names_its_base_and_loads_with_peft(policy_run, tiny_policy, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    assert main(["export", "model", str(policy_run), "--out", str(out), "--adapter"]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_policy.resolve())
    assert not (out / "config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, out).eval()
    ours, our_tok = load_policy(str(policy_run))
    assert torch.allclose(_last_logits(model, AutoTokenizer.from_pretrained(out)),
                          _last_logits(ours, our_tok), atol=1e-6)


def test_adapter_on_the_gguf_default_names_the_converted_folder(policy_run, tmp_path):
    """SmolLM2 ships as a GGUF file that peft cannot load as a base: the adapter names the
    float32 safetensors folder prefstudio converted it to (harness.hub's cache)."""
    from harness.hub import SMOLLM2, cache_dir
    if not (cache_dir() / "models" / SMOLLM2 / "model.safetensors").exists():
        pytest.skip("SmolLM2 has not been converted on this machine (the first load does it)")
    run = tmp_path / "run"
    shutil.copytree(policy_run / "adapter", run / "adapter")
    (run / "policy.json").write_text(json.dumps({"base": SMOLLM2, "adapter": "adapter"}))
    from policy.export import export_adapter
    export_adapter(run, tmp_path / "out")
    named = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    folder = cache_dir().resolve() / "models" / SMOLLM2
    assert named["base_model_name_or_path"] == str(folder)
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def test_a_run_that_sampled_exports_its_own_sampling(policy_run, tmp_path):
    """rs/ppo/rloo runs keep the sampling they trained with: that, not the defaults, is written."""
    run = tmp_path / "rs-like"
    shutil.copytree(policy_run, run, ignore=shutil.ignore_patterns("checkpoint"))
    info = json.loads((run / "run.json").read_text())
    info["config"]["sampling"] = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64, "top_k": 0}
    (run / "run.json").write_text(json.dumps(info))
    assert main(["export", "model", str(run), "--out", str(tmp_path / "out")]) == 0
    gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["max_new_tokens"]) == (1.0, 1.0, 64)
    assert "its config's `sampling`" in (tmp_path / "out" / "README.md").read_text()
