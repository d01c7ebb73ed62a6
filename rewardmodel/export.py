"""A reward model (or an ensemble of them) as folders TRL, OpenRLHF and plain transformers load.

prefstudio's reward model already is a standard ``AutoModelForSequenceClassification`` with
``num_labels=1`` (see ``model.py``): a decoder reads its ``score`` head at the last non-padding
token, exactly as ``LlamaForSequenceClassification`` (and every ``*ForSequenceClassification``
of a causal LM) does; an encoder reads BERT's pooler (dense + tanh on [CLS]) through its
``classifier``, exactly ``BertForSequenceClassification``. So nothing needs re-expressing:
the LoRA adapter is merged into the weights (peft ``merge_and_unload``; the head, trained in
full as a ``modules_to_save`` copy, takes the place of the base's), a head trained on a shared
backbone (``head.pt``) is already in place after ``RewardModel.load``, and the result is saved
with ``save_pretrained`` — standard classes, no ``trust_remote_code``.

What a plain model does not know is how prefstudio turns (prompt, response) into text; the
folder's README says it, with a rendered example, so others feed the model the same input.

An ensemble exports as one folder per member plus ``ensemble.json`` (the weights, each member's
normalisation mean and std, the safety gate) and a README stating the combination rule.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.chat import render_plain, render_reply

from .model import RM_FILE, RewardModel
from .score import Ensemble

README = "README.md"
ENSEMBLE_FILE = "ensemble.json"
_EXAMPLE = ([{"role": "user", "content": "Hello!"}], "Hi! How can I help?")


def is_reward_run(folder: str | Path) -> bool:
    return (Path(folder) / RM_FILE).exists()


def is_ensemble_config(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return isinstance(json.loads(path.read_text()).get("models"), list)
    except (OSError, ValueError, AttributeError):
        return False


def export_reward_model(run_dir: str | Path, out: str | Path) -> dict:
    """Write the reward model of ``run_dir`` as a sequence-classification folder ``out``."""
    return _save_standalone(RewardModel.load(run_dir), Path(out), str(run_dir))


def export_ensemble(config_path: str | Path, out: str | Path) -> dict:
    """Write an ensemble config's members (each a folder) and its rule into ``out``."""
    return _save_ensemble(Ensemble.load(config_path), Path(out), str(config_path))


def _save_standalone(rm: RewardModel, out: Path, source: str) -> dict:
    model = rm.model.merge_and_unload() if hasattr(rm.model, "merge_and_unload") else rm.model
    model.config.num_labels = 1
    model.config.pad_token_id = rm.pad_id
    tok = rm.tokenizer
    if tok.pad_token_id is None:  # the model reads its score before the first pad: name it
        tok.pad_token = tok.convert_ids_to_tokens(rm.pad_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / README).write_text(_model_readme(rm, out, source))
    return {"kind": "reward_model", "path": str(out), "run": source, "backbone": rm.kind,
            "class": type(model).__name__, "max_length": rm.max_length,
            "reward_stats": rm.reward_stats}


def _save_ensemble(ensemble: Ensemble, out: Path, source: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[int, str] = {}  # a model listed twice is exported once

    def save(scorer, name: str, origin: str) -> str:
        if id(scorer) not in written:
            if isinstance(scorer, Ensemble):
                _save_ensemble(scorer, out / name, origin)
            else:
                _save_standalone(scorer, out / name, origin)
            written[id(scorer)] = name
        return written[id(scorer)]

    members = [{"path": save(m.scorer, f"member-{i}", m.path), "weight": m.weight,
                "mean": m.mean, "std": m.std, "source": m.path,
                "kind": "ensemble" if isinstance(m.scorer, Ensemble) else "reward_model"}
               for i, m in enumerate(ensemble.members)]
    safety = None
    if ensemble.safety is not None:
        gate = ensemble.safety
        safety = {"path": save(gate.scorer, "safety", gate.path), "threshold": gate.threshold,
                  "tags": list(gate.tags), "source": gate.path}
    rule = {"members": members, "safety": safety, "source": source,
            "score": "sum over members of weight * (reward - mean) / std",
            "safety_rule": "reward = safety reward where it is below threshold or the prompt "
                           "carries one of tags, else the weighted sum (Llama 2, section 3.2.2)"}
    (out / ENSEMBLE_FILE).write_text(json.dumps(rule, indent=2))
    (out / README).write_text(_ensemble_readme(rule))
    return {"kind": "ensemble", "path": str(out), "run": source,
            "members": [m["path"] for m in members], "safety": safety and safety["path"]}


def _model_readme(rm: RewardModel, out: Path, source: str) -> str:
    prompt, response = _EXAMPLE
    tok = rm.tokenizer
    if rm.kind == "decoder":
        example = render_reply(tok, prompt, response)[1]
        feed = ('chat = prompt + [{"role": "assistant", "content": response}]\n'
                'text = tok.apply_chat_template(chat, tokenize=False)\n'
                'inputs = tok(text, add_special_tokens=False, return_tensors="pt")')
        reads = (f"the `score` head at the last token that is not the pad token "
                 f"(id {rm.pad_id}, `{tok.convert_ids_to_tokens(rm.pad_id)}`): keep the text "
                 "exactly as rendered, do not append an EOS or strip the trailing newline")
        text = ("the chat rendered by the tokenizer's chat template, the response as the "
                "assistant's turn, tokenized without extra special tokens")
    else:
        example = f"[CLS] {render_plain(prompt)} [SEP] {response} [SEP]"
        feed = ('context = "\\n".join(f"{m[\'role\']}: {m[\'content\']}" for m in prompt)\n'
                'inputs = tok(context, response, return_tensors="pt")   # a text pair')
        reads = "the pooler (dense + tanh on [CLS]) through the `classifier` head"
        text = ('a text pair: the prompt as "role: content" lines, then the response '
                "(`[CLS] prompt [SEP] response [SEP]`, token types 0 then 1)")
    stats = json.dumps(rm.reward_stats) if rm.reward_stats else "not measured"
    return (
        "# Reward model exported by prefstudio\n\n"
        f"From the prefstudio run `{source}` (backbone `{rm.spec}`, {_article(rm.kind)}). A standard "
        "`AutoModelForSequenceClassification` with one output, the reward: "
        "no custom code.\n\n"
        "```python\nimport torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f"tok = AutoTokenizer.from_pretrained({str(out)!r})\n"
        f"model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}).eval()\n"
        'prompt = [{"role": "user", "content": "Hello!"}]   # chat messages\n'
        'response = "Hi! How can I help?"\n'
        f"{feed}\n"
        "with torch.no_grad():\n    reward = model(**inputs).logits[0, 0].item()\n```\n\n"
        f"## Input: feed it the text prefstudio trained it on\n\nThe input is {text}; the "
        f"model reads {reads}. The example above is:\n\n```\n{example}\n```\n\n"
        f"prefstudio cuts inputs to {rm.max_length} tokens, removing the prompt's oldest tokens "
        "first (the response is kept whole when it fits beside a quarter of that budget; "
        "a response too long is cut from its end). A tokenizer's own `truncation=True` cuts "
        "differently: give it inputs within the limit for identical scores.\n\n"
        f"## Scale\n\nRewards on held-out responses when it was trained: {stats}.\n")


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _ensemble_readme(rule: dict) -> str:
    rows = "\n".join(f"| `{m['path']}/` | {m['weight']} | {m['mean']} | {m['std']} | "
                     f"`{m['source']}` |" for m in rule["members"])
    gate = rule["safety"]
    safety = ("No safety gate." if gate is None else
              f"Safety gate: `{gate['path']}/` (threshold {gate['threshold']}, tags "
              f"{gate['tags']}): where its reward is below the threshold or the prompt carries "
              "one of the tags, the ensemble's reward is the safety model's reward "
              "(Llama 2, Touvron et al. 2023, section 3.2.2).")
    return (
        "# Reward-model ensemble exported by prefstudio\n\n"
        f"From `{rule['source']}`. Each folder is a reward model (see its own README for the "
        "input format); `ensemble.json` holds the rule:\n\n"
        "    reward = sum over members of weight * (member reward - mean) / std\n\n"
        "| member | weight | mean | std | exported from |\n|---|---|---|---|---|\n"
        f"{rows}\n\n{safety}\n\n"
        "(mean 0 and std 1 when the ensemble did not normalise its members; a member of kind "
        "`ensemble` is a folder of this same layout.)\n")
