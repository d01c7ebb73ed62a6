"""A policy run as a folder that serving stacks load without prefstudio.

``export_merged``: the LoRA adapter merged into the base weights (peft ``merge_and_unload``) and
saved as a plain transformers causal LM (config.json + model.safetensors, no custom code), with
the tokenizer and its chat template and a ``generation_config.json`` holding prefstudio's
sampling settings. ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` and vLLM
(``vllm serve folder``) load it as it is.

``export_adapter``: the PEFT adapter folder alone, its ``adapter_config.json`` naming the base
as a folder or hub id that loads offline (for the default SmolLM2 base that is the converted
float32 safetensors cache, never the GGUF file prefstudio starts from), for stacks that apply
LoRA adapters at serving time (vLLM ``--enable-lora``, ``peft.PeftModel.from_pretrained``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

from harness.chat import render_chat
from harness.hub import resolve

from .generate import SamplingParams
from .lm import POLICY_FILE, load_policy, load_tokenizer, policy_source

README = "README.md"


def is_policy_run(folder: str | Path) -> bool:
    return (Path(folder) / POLICY_FILE).exists()


def loadable_base(base_spec: str) -> str:
    """The base as ``from_pretrained`` takes it anywhere on this machine: an absolute folder
    (default names resolve to their converted cache), or the hub id itself."""
    resolved = resolve(base_spec)
    path = Path(resolved)
    return str(path.resolve()) if path.exists() else resolved


def sampling_defaults(run_dir: str | Path) -> SamplingParams:
    """The sampling settings the run itself used (rs/ppo/rloo keep them in their config), or
    else those ``prefstudio generate`` and evaluation use by default."""
    known = {f.name for f in fields(SamplingParams)}
    return SamplingParams(**{k: v for k, v in _run_sampling(run_dir).items() if k in known})


def _run_sampling(run_dir: str | Path) -> dict:
    run_file = Path(run_dir) / "run.json"
    config = json.loads(run_file.read_text()).get("config", {}) if run_file.exists() else {}
    return config.get("sampling") if isinstance(config.get("sampling"), dict) else {}


def generation_config(model, tok, params: SamplingParams):
    """transformers' GenerationConfig for prefstudio's sampling: the same end tokens as
    ``policy.generate.sample`` (the model's and the tokenizer's EOS), its temperature, nucleus
    and top-k cut. top_k=0 is written out because transformers otherwise defaults to 50."""
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        eos_ids.add(tok.eos_token_id)
    greedy = params.temperature <= 0
    sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p,
                                  "top_k": params.top_k}
    return GenerationConfig(
        do_sample=not greedy, **sampling, repetition_penalty=params.repetition_penalty,
        max_new_tokens=params.max_new_tokens, eos_token_id=sorted(eos_ids),
        pad_token_id=tok.pad_token_id, bos_token_id=model.generation_config.bos_token_id)


def export_merged(run_dir: str | Path, out: str | Path) -> dict:
    """Write the policy of ``run_dir`` with its adapter merged into ``out`` (a new folder)."""
    run_dir, out = Path(run_dir), Path(out)
    base, _ = policy_source(str(run_dir))
    model, tok = load_policy(str(run_dir))
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    params = sampling_defaults(run_dir)
    merged.generation_config = generation_config(merged, tok, params)
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    _write_readme(out, tok, run_dir, base, params, adapter=False)
    return {"kind": "policy", "format": "merged", "path": str(out), "base": loadable_base(base),
            "run": str(run_dir), "generation": params.as_dict()}


def export_adapter(run_dir: str | Path, out: str | Path) -> dict:
    """Copy the run's PEFT adapter (and tokenizer) into ``out``, naming a loadable base."""
    run_dir, out = Path(run_dir), Path(out)
    base, adapter = policy_source(str(run_dir))
    out.mkdir(parents=True, exist_ok=True)
    # files only: a PPO critic adapter saved in a sub-folder is not part of the policy
    for item in Path(adapter).iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = loadable_base(base)
    config_file.write_text(json.dumps(config, indent=2))
    _write_readme(out, load_tokenizer(base), run_dir, base, sampling_defaults(run_dir), adapter=True)
    return {"kind": "policy", "format": "adapter", "path": str(out),
            "base": config["base_model_name_or_path"], "run": str(run_dir)}


def _write_readme(out: Path, tok, run_dir: Path, base: str, params: SamplingParams,
                  adapter: bool) -> None:
    example = render_chat(tok, [{"role": "user", "content": "Hello!"}])
    if adapter:
        load = (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                f"base = AutoModelForCausalLM.from_pretrained({loadable_base(base)!r})\n"
                f"model = PeftModel.from_pretrained(base, {str(out)!r})")
    else:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"model = AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
                f"tok = AutoTokenizer.from_pretrained({str(out)!r})")
    what = ("the PEFT (LoRA) adapter of" if adapter
            else "a plain transformers causal LM: the LoRA adapter merged into the base of")
    (out / README).write_text(
        f"# Policy exported by prefstudio\n\n"
        f"This folder is {what} the prefstudio run `{run_dir}` (base `{base}`).\n\n"
        f"```python\n{load}\n```\n\n"
        "## Input\n\nPrompts are chats rendered with the tokenizer's chat template and the "
        "generation prompt (`tok.apply_chat_template(messages, add_generation_prompt=True, "
        "tokenize=False)`), tokenized without extra special tokens "
        "(`add_special_tokens=False`). A one-turn prompt becomes:\n\n"
        f"```\n{example}\n```\n\n"
        "## Sampling\n\n"
        + ("The run sampled with these settings (its config's `sampling`):" if _run_sampling(run_dir)
           else "prefstudio's defaults for `generate` and policy evaluation:") + "\n\n"
        f"```json\n{json.dumps(params.as_dict(), indent=2)}\n```\n\n"
        "(`top_k` 0: no top-k cut; prompts longer than `max_prompt_tokens` lose their oldest "
        "tokens.)" + ("" if adapter else " `generation_config.json` holds the same settings, "
                      "which vLLM and `model.generate` use as defaults.") + "\n")
