"""Job forms: which fields each job kind shows, the presets that fill them, and the command
line a filled form becomes.

There is no list of options here: a form's fields are options of the CLI command the job runs,
read from the CLI's own parser (``parse_command.options(words)``: flag, type, choices, help,
built from ``cli/stages.py`` for train and eval), and the argv a form builds is checked with
that parser before anything starts. ``FIELDS`` only says which of them a form puts first;
any other option of the command can be given in ``params`` or in the *advanced* box.

``params`` are keyed by the options' ``dest`` (``{"base": "minilm", "max_steps": 2}``), plus
two the studio itself reads: ``prompts`` (a prompt set, see ``jobinputs.PROMPT_SETS``: the job
gets a snapshot file of it) and ``options`` (extra flags as typed on a command line).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from .. import runlog
from ..store import StoreError
from ..store.models import POLICY_KINDS

EMBEDDED = ("smollm2-135m-instruct", "minilm")   # the models the project ships specs for
# <workspace>/models/NAME/ (a saved transformers model): offered by NAME in the model pickers
MODELS_FOLDER = "models"
DEFAULT_POLICY, DEFAULT_RM_BASE = "smollm2-135m-instruct", "minilm"  # (a SmolLM2 RM: 51 s/step on a CPU)

# The CLI command of each kind. A new kind is one line here and one in jobs.KINDS.
COMMANDS = {
    "rm": ("train", "rm"), "sft": ("train", "sft"), "dpo": ("train", "dpo"),
    "rs": ("train", "rs"), "ppo": ("train", "ppo"), "rloo": ("train", "rloo"),
    "rrhf": ("train", "rrhf"),
    "generate": ("generate", "--run-only"), "judge": ("judge",),
    "eval_rm": ("eval", "rm"), "eval_policy": ("eval", "policy"),
    "cai": ("train", "cai"),   # Constitutional AI's supervised stage (SL-CAI)
    "rest": ("train", "rs"),   # rejection sampling with ReST's Improve steps (--thresholds)
    "queue_order": ("queue-order",),
}
FILTERS = ("source", "label_rounds", "min_agreement", "principle")
TRAINING = ("max_steps", "batch_size", "lr", "lora_r")
FIELDS = {   # the fields a form shows first, in order (dests of the command's options)
    "rm": ("base", *FILTERS, *TRAINING),
    "sft": ("model", *FILTERS, *TRAINING),
    "dpo": ("model", *FILTERS, *TRAINING, "beta"),
    "rs": ("model", "rm", "prompts", *TRAINING, "k", "max_new_tokens"),
    "ppo": ("model", "rm", "prompts", *TRAINING, "beta", "max_new_tokens"),
    "rloo": ("model", "rm", "prompts", *TRAINING, "beta", "k", "max_new_tokens"),
    "rrhf": ("model", *FILTERS, *TRAINING, "sft_weight", "rm"),   # rm: orders instead of labels
    "generate": ("model", "prompts", "k", "round", "max_new_tokens", "limit"),
    "judge": ("judge", "principle", "limit"),
    "eval_rm": ("model", "labels", *FILTERS),
    "eval_policy": ("model", "rm", "prompts", "max_prompts", "max_new_tokens"),
    "cai": ("model", "prompts", "principles", "revisions", *TRAINING, "max_new_tokens", "round"),
    "rest": ("model", "rm", "prompts", *TRAINING, "k", "rounds", "thresholds", "max_new_tokens"),
    "queue_order": ("order", "rm", "round", "clusters"),
}
# What a picker offers for a field: models to start from, reward models, judges.
PICKERS = {"base": "base", "model": "policy", "rm": "reward_model", "judge": "judge"}
STUDIO_PARAMS = ("prompts", "options")
# Set by the studio (its snapshot files and the run folder) or changing what the job is.
RESERVED = ("db", "out", "data", "prompts", "json", "run_dir", "tasks", "run_only", "report")
_UNSET = "\0set-by-the-studio"   # no option value can contain NUL

PRESETS = {   # "fast": a few minutes on a laptop CPU; "quality": a real run (a GPU helps)
    "fast": {"base": DEFAULT_RM_BASE, "model": DEFAULT_POLICY, "max_steps": 20, "batch_size": 4,
             "lr": 1e-4, "lora_r": 8, "beta": 0.1, "k": 2, "max_new_tokens": 48, "limit": 20,
             "max_prompts": 16, "sft_weight": 1.0, "revisions": 1, "rounds": 1,
             "thresholds": "0.5,0.7,0.9"},
    "quality": {"base": DEFAULT_RM_BASE, "model": DEFAULT_POLICY, "max_steps": 500,
                "batch_size": 16, "lr": 5e-5, "lora_r": 16, "beta": 0.1, "k": 4,
                "max_new_tokens": 256, "limit": None, "max_prompts": None, "sft_weight": 1.0,
                "revisions": 2, "rounds": 2, "thresholds": "0.5,0.7,0.9"},
}

# `train rm`'s own defaults (rewardmodel.train.RMConfig: MiniLM, two epochs, lr 2e-4, LoRA r 16 on
# every linear layer; docs/rm-recipes.md), so the reward-model form trains what the short
# command does: ~7 minutes for 1,500 pairs on a 2-core CPU. Blank steps = two epochs.
RM_RECIPE = {"base": DEFAULT_RM_BASE, "max_steps": None, "batch_size": 8, "lr": 2e-4, "lora_r": 16}


def preset(kind: str, name: str = "fast") -> dict:
    """The preset's values for the fields of ``kind`` (what the form shows before any edit)."""
    if name not in PRESETS:
        raise StoreError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
    values = {k: v for k, v in PRESETS[name].items() if k in FIELDS[kind]}
    if kind == "eval_rm":
        values.pop("model", None)   # a reward model to pick, not a base
        values["labels"] = "held-out"   # the Models page's headline: what it never trained on
    if kind in ("rs", "ppo", "rloo", "rest") and name == "fast":
        values["max_steps"] = 5     # a step samples and scores a whole batch
    if kind == "rm":
        values.update(RM_RECIPE)    # the measured recipe, in both presets
    return values


def form(kind: str, options_of) -> list[dict]:
    """The fields of ``kind``'s form: each one's option as the CLI defines it, with the value
    the fast preset gives it (else the CLI's own default)."""
    check_kind(kind)
    options = {o["dest"]: o for o in options_of(list(command_words(kind)))}
    values = preset(kind)
    fields = []
    for dest in FIELDS[kind]:
        o = options.get(dest) or {"flag": None, "dest": dest, "type": "str", "choices": None,
                                  "default": None, "help": "prompt set (a snapshot is given to the job)"}
        # (eval rm's --model is the reward model to evaluate, not a policy)
        picker = "reward_model" if (kind, dest) == ("eval_rm", "model") else PICKERS.get(dest)
        fields.append({**o, "value": values.get(dest, o["default"]), "picker": picker})
    return fields


def check_kind(kind: str) -> None:
    if kind not in COMMANDS:
        raise StoreError(f"job kind must be one of {', '.join(COMMANDS)}, not {kind!r}")


def command_words(kind: str) -> tuple[str, ...]:
    return COMMANDS[kind]


def build_argv(kind: str, params: dict, parse_command, runs: Path,
               studio_paths: dict[str, str]) -> list[str]:
    """The command line (after ``prefstudio``) of a job: the kind's words, the studio's own
    paths (``{"data": FILE, "out": DIR}``), then every param as its option, then the advanced
    flags. A run named by its id (a finished run of ``runs``) is given by its folder. Refused
    with one line (StoreError) for an unknown param, a reserved option, or anything the CLI's
    parser refuses."""
    check_kind(kind)
    if parse_command is None or not hasattr(parse_command, "options"):
        raise StoreError("jobs need the CLI's parser: start the studio with `prefstudio serve`")
    if not isinstance(params, dict):
        raise StoreError("params must be an object of option names to values")
    words = list(command_words(kind))
    options = {o["dest"]: o for o in parse_command.options(words[:2] if words[0] != "generate"
                                                            else words[:1])}
    argv = []
    for dest, value in params.items():
        if dest in STUDIO_PARAMS:
            continue
        if dest in RESERVED:
            raise StoreError(f"params: {dest} is set by the studio itself")
        o = options.get(dest)
        if o is None:
            raise StoreError(f"params: {dest!r} is not an option of {' '.join(words[:2])} "
                             f"(options: {', '.join(d for d in options if d not in RESERVED)})")
        if value is None or value == "" or value is False:
            continue
        if o["type"] == "flag":
            argv.append(o["flag"])
            continue
        if isinstance(value, (dict, list)):
            raise StoreError(f"params: {dest} must be a number or a string")
        argv += [o["flag"], resolve_run_name(str(value), runs, judge=dest == "judge")]
    try:
        extra = shlex.split(params.get("options") or "")
    except ValueError as err:
        raise StoreError(f"options: {err}") from None
    check_parsed(words, [*argv, *extra], studio_paths, options, parse_command, extra)
    needs = NEEDS.get(kind)
    if needs and not any(params.get(d) or f"--{d}" in " ".join(extra) for d in needs):
        raise StoreError(f"{kind}: choose {' or '.join(needs)}")
    studio = [a for dest, path in studio_paths.items() for a in (options[dest]["flag"], path)]
    return [*words, *studio, *argv, *extra]


NEEDS = {"rs": ("rm", "reward"), "ppo": ("rm", "reward"), "rloo": ("rm", "reward"),
         "rest": ("rm", "reward"),
         "judge": ("judge",), "eval_rm": ("model",), "eval_policy": ("model",),
         "queue_order": ("order",)}


def check_parsed(words, args, studio_paths, options, parse_command, extra) -> None:
    """Parse ``args`` as the job will (its studio paths as placeholders); refuse, with one line,
    what sets a reserved option or an option that does not apply to the kind."""
    placeholders = [a for dest in studio_paths for a in (options[dest]["flag"], _UNSET)]
    if words[0] == "eval":   # (required by the parser; a given --model comes later and wins)
        placeholders += ["--model", _UNSET]
    try:
        base = vars(parse_command([*words, *placeholders]))
        parsed = vars(parse_command([*words, *placeholders, *args]))
    except ValueError as err:
        raise StoreError(f"options: {err}") from None
    for dest, value in parsed.items():
        if value == base.get(dest):
            continue
        flag = f"--{dest.replace('_', '-')}"
        if dest in RESERVED:
            spelled = ([t.split("=", 1)[0] for t in extra if t.startswith("--")
                        and flag.startswith(t.split("=", 1)[0])] or [flag])[-1]
            named = "" if spelled == flag else f" (as {spelled})"
            raise StoreError(f"options: {flag}{named} is set by the studio itself")
        if dest not in options:
            raise StoreError(f"options: {flag} is not an option of {' '.join(words[:2])}")


def typed(kind: str, params: dict, options_of) -> dict:
    """``params`` with numbers typed in a form (text) as numbers, by the option's type; a value
    that does not parse is left for the CLI's parser to refuse in its own words."""
    types = {o["dest"]: o["type"] for o in options_of(list(command_words(kind))[:2])}
    cast = {"int": int, "float": float}
    out = {}
    for dest, value in params.items():
        if isinstance(value, str) and types.get(dest) in cast:
            try:
                value = cast[types[dest]](value.strip())
            except ValueError:
                pass
        out[dest] = value
    return out


def resolve_run_name(value: str, runs: Path, judge: bool = False) -> str:
    """A finished run named by its id becomes its folder (``rm:<run id>`` too, for a judge), and
    so does a local model named as in ``<workspace>/models/`` (``runs`` is <workspace>/runs)."""
    prefix, name = (value.split(":", 1) if judge and ":" in value else ("", value))
    if re.fullmatch(r"[\w.-]+", name) and not name.startswith("."):
        if (runs / name / runlog.RUN_FILE).exists():
            name = str((runs / name).resolve())
        elif name in local_models(runs.parent):
            name = str((runs.parent / MODELS_FOLDER / name).resolve())
    return f"{prefix}:{name}" if prefix else name


def local_models(workspace: Path) -> list[str]:
    """The names of the model folders in <workspace>/models/ (each a saved transformers model:
    a config.json), so a model of one's own is picked by name like the embedded ones."""
    folder = Path(workspace) / MODELS_FOLDER
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if not p.name.startswith(".") and (p / "config.json").is_file())


def model_choices(runs_rows: list[dict], picker: str, workspace: Path) -> list[str]:
    """What a picker offers, by name: the embedded models, the local ones (<workspace>/models/)
    and finished policy runs (policy), the embedded and local models (base), finished reward
    models and ensembles (reward_model), and the judges those make (judge). A model folder can
    still be typed in any of them."""
    done = [r for r in runs_rows if r["status"] == "done"]
    policies = [r["id"] for r in done if r["kind"] in POLICY_KINDS]
    rms = [r["id"] for r in done if r["kind"] == "rm"]
    ensembles = sorted(str(p.relative_to(workspace)) for p in (workspace / "ensembles").glob("*.json")) \
        if (workspace / "ensembles").is_dir() else []
    local = local_models(workspace)
    if picker == "base":
        return [*EMBEDDED, *local]
    if picker == "policy":
        return [DEFAULT_POLICY, *local, *policies]
    if picker == "reward_model":
        return [*rms, *ensembles]
    return [*(f"rm:{r}" for r in rms), *(f"local:{m}" for m in (DEFAULT_POLICY, *local, *policies))]
