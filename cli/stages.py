"""Which option applies to which stage: the one table that `train` and `eval` build their
options from and check them against.

Every option here defaults to None ("not given"), so an option given to a stage it does not
apply to is refused, the same way for every stage, before anything is loaded or written:

    prefstudio train: --beta is not an option of this trainer (train sft; it applies to train dpo, ppo, rloo)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.config import PRECISIONS

from .common import CliError

RM, SFT, RS, DPO, PPO, RLOO = "rm", "sft", "rs", "dpo", "ppo", "rloo"
RRHF = "rrhf"
CAI = "cai"                       # Constitutional AI's supervised stage (policy/cai.py)
TRAIN_KINDS = (RM, SFT, RS, DPO, PPO, RLOO, RRHF, CAI)
POLICY = (SFT, RS, DPO, PPO, RLOO, RRHF, CAI)
FROM_LABELS = (RM, SFT, DPO, RRHF)  # read preference data (--data FILE or the store)
ONLINE = (RS, PPO, RLOO)          # sample from --prompts and score with --rm or --reward
SAMPLED = ONLINE + (RRHF,)        # rrhf: ranks samples of --prompts by --rm/--reward, if given
PROMPTED = (*SAMPLED, CAI)        # sample from --prompts
EVAL_KINDS = ("rm", "policy")


@dataclass(frozen=True)
class Option:
    flag: str
    kinds: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    hint: str = ""                 # said instead of the list of kinds when refused

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def opt(flag: str, kinds: tuple[str, ...], help: str, hint: str = "", **kwargs) -> Option:
    if kwargs.get("action") == "store_true":
        kwargs["default"] = None   # None: not given (False would look like "given" to no one)
    return Option(flag, kinds, {"help": help, **kwargs}, hint)


FILTERS = [
    opt("--source", FROM_LABELS, "labels by people, by AI judges, or both (default)",
        choices=["human", "ai", "both"]),
    opt("--min-agreement", FROM_LABELS, "drop pairs with lower annotator agreement",
        type=float),
    opt("--label-rounds", FROM_LABELS, "annotation rounds, comma-separated (default: all)"),
    opt("--principle", FROM_LABELS, "only AI labels judged under this principle"),
]

TRAIN = {
    "inputs": [
        opt("--data", FROM_LABELS, "training file (any import format; sft also a chat file of "
            "{\"messages\": [...]}) instead of the store"),
        opt("--prompts", PROMPTED, "JSONL of {\"prompt\": text or messages}; rows marked "
            "\"held_out\": true are skipped (default: the store's prompts that are not held out; "
            "rrhf: sample candidates from these instead of the labelled tasks')"),
        opt("--model", POLICY, "policy to start from: model spec, folder, or run (folder or "
            "run id); default smollm2-135m-instruct"),
        opt("--base", (RM,), "reward-model backbone spec (default minilm)"),
        opt("--rm", SAMPLED, "trained reward model: run folder, run id or ensemble config "
            "(rrhf: orders the candidates instead of the labels)"),
        opt("--reward", SAMPLED, "programmatic reward instead of --rm: keyword:W1,W2 | length | "
            "length:N"),
    ],
    "training": [
        opt("--config", TRAIN_KINDS, "JSON file of config fields; options override it"),
        opt("--max-steps", TRAIN_KINDS, "optimizer steps (ppo, rloo: rollout batches)", type=int),
        opt("--batch-size", TRAIN_KINDS, "examples per micro-batch per process (rm, dpo: pairs; "
            "sft, rs, cai: chats; ppo, rloo: prompts; rrhf: prompts with their K candidates)",
            type=int),
        opt("--grad-accum", (RM, SFT, RS, DPO, RLOO, RRHF, CAI), "micro-batches per optimizer step",
            type=int, hint="ppo splits a rollout batch with --minibatch-size"),
        opt("--lr", TRAIN_KINDS, "peak learning rate", type=float),
        opt("--seed", TRAIN_KINDS, "random seed", type=int),
        opt("--max-length", TRAIN_KINDS, "tokens per sequence (rm, sft, rs: a whole chat; dpo, "
            "rrhf: prompt + response, half each; ppo, rloo: the prompt); prompts are cut from the left "
            "so the response survives", type=int),
        opt("--lora-r", TRAIN_KINDS, "LoRA rank of a new adapter (rm: 0 = full fine-tuning)",
            type=int),
        opt("--save-every", TRAIN_KINDS, "checkpoint every N steps (0: only at the end)",
            type=int),
        opt("--gradient-checkpointing", TRAIN_KINDS, "recompute activations in the backward "
            "pass (less memory, slower)", action="store_true"),
        opt("--precision", TRAIN_KINDS, "matrix products in bf16 (weights, optimizer, attention "
            "on CPUs and heads fp32), fp32, or auto: bf16 where the hardware makes it fast (CPUs "
            "with AMX or AVX-512 BF16, GPUs); default auto for rm, dpo and sft, fp32 for the "
            "other stages",
            choices=list(PRECISIONS)),
    ],
    "preference data filters": FILTERS,
    "reward model": [
        opt("--epochs", (RM,), "passes over the data when --max-steps is unset (2)", type=float),
        opt("--seeds", (RM,), "train one model per seed (comma-separated, e.g. 0,1,2) into "
            "OUT/seed-S and write OUT/ensemble.json, their normalised equal-weight ensemble; "
            "--rm OUT then uses the ensemble"),
        opt("--full-finetune", (RM,), "train every weight, no LoRA", action="store_true"),
        opt("--no-resume", (RM,), "ignore a checkpoint left in --out by an interrupted run",
            action="store_true"),
        opt("--rm-kind", (RM,), "override the backbone kind detected from its config",
            choices=["decoder", "encoder"]),
        opt("--lora-targets", (RM,), "module names, comma-separated, or all-linear "
            "(default all-linear: every linear layer, the pooler's too)"),
        opt("--train-modules", (RM,), "extra modules trained in full, comma-separated "
            "(e.g. pooler)"),
        opt("--eval-data", (RM,), "held-out file instead of the automatic split"),
        opt("--eval-fraction", (RM,), "prompts kept aside for evaluation (0.1)", type=float),
        opt("--eval-every", (RM,), "evaluate and checkpoint every N steps", type=int),
        opt("--patience", (RM,), "stop after N evaluations without improvement", type=int),
        opt("--no-margin", (RM,), "ignore the labels' margin levels", action="store_true"),
        opt("--margin-values", (RM,), 'JSON map margin level -> m, e.g. '
            '{"significantly": 1, "better": 0.5}'),
        opt("--no-soft-labels", (RM,), "hard labels even where an AI judge gave a probability",
            action="store_true"),
        opt("--no-rankings", (RM,), "train K-way tasks as separate pairs, not with the ranking "
            "loss", action="store_true"),
        opt("--center", (RM,), "reward-centering coefficient (e.g. 0.01)", type=float),
    ],
    "policy": [
        opt("--packing", (SFT,), "pack chats into rows", action="store_true"),
        opt("--beta", (DPO, PPO, RLOO), "dpo: β (ipo: τ); ppo, rloo: KL coefficient", type=float),
        opt("--loss", (DPO,), "the loss", choices=["sigmoid", "ipo"]),
        opt("--margin-scale", (DPO,), "offset = scale × label margin", type=float),
        opt("--reference", (DPO,), "reference = the starting policy (initial, the default) or "
            "the bare base", choices=["initial", "base"]),
        opt("--k", (RS, RLOO, RRHF), "samples per prompt (rrhf: with --prompts)", type=int),
        opt("--sft-weight", (RRHF,), "λ of L_rank + λ·L_ft, the cross-entropy of the best "
            "candidate (1, as in the paper)", type=float),
        opt("--rounds", (RS,), "sample-select-train rounds (ReST: Grow steps)", type=int),
        opt("--select", (RS,), "best of K per prompt, or the top fraction overall (RAFT)",
            choices=["best", "top"]),
        opt("--top-fraction", (RS,), "fraction kept with --select top", type=float),
        opt("--min-reward", (RS,), "never keep a sample below this reward", type=float),
        opt("--thresholds", (RS,), "ReST: one Improve step per quantile, each training on the "
            "samples whose reward reaches that quantile of the round's rewards, e.g. "
            "0.5,0.7,0.9 (rising, in (0, 1); replaces --select)"),
        opt("--principles", (CAI,), "principles file the critiques and revisions follow "
            "(default data/principles.md)"),
        opt("--revisions", (CAI,), "critique-revision steps per answer (1 to 8; default 1)",
            type=int),
        opt("--round", (CAI,), "annotation round of the answer-vs-revisions tasks", type=int),
        opt("--max-new-tokens", PROMPTED, "response length limit", type=int),
        opt("--temperature", PROMPTED, "sampling temperature", type=float),
        opt("--kl-target", (PPO, RLOO), "adapt β towards this KL per response (nats)", type=float),
        opt("--critic", (PPO,), "value head on the policy's hidden states (shared) or its own "
            "adapter", choices=["shared", "adapter"]),
        opt("--ppo-epochs", (PPO,), "passes over each rollout batch (4)", type=int),
        opt("--minibatch-size", (PPO,), "rollouts per optimizer update", type=int),
    ],
}

EVAL = {
    "inputs": [
        opt("--model", EVAL_KINDS, "rm: the reward model (run folder, run id or ensemble "
            "config); policy: the policy (run folder, run id or model spec)", required=True),
        opt("--data", ("rm",), "pairs file (any import format) instead of the store"),
        opt("--rm", ("policy",), "reward model (run folder, run id or ensemble config)"),
        opt("--reward", ("policy",), "programmatic reward instead of --rm"),
        opt("--prompts", ("policy",), "held-out prompts: JSONL of {\"prompt\": ...} "
            "(default: the store's prompts marked held out)"),
        opt("--judge", ("policy",), "also compare the answers with an AI judge "
            "(openai:URL#MODEL | local:SPEC | rm:DIR; principle from --principle)"),
        opt("--reference", ("policy",), "compare with this model (spec, folder, run or "
            "openai:URL#MODEL) instead of the policy's base with its adapter off; needed when "
            "--model is openai:URL#MODEL"),
        opt("--api-key-env", ("policy",), "environment variable holding the API key of a served "
            "--model or --reference (never stored)"),
        opt("--concurrency", ("policy",), "requests in flight to a served model (default 4)",
            type=int),
    ],
    "preference data filters": [o for o in FILTERS if o.flag != "--principle"] + [
        opt("--principle", ("rm", "policy"), "rm: only AI labels judged under this principle; "
            "policy: the --judge's principle")],
    "evaluation": [
        opt("--labels", ("rm",), "which labels to measure on: all (default) or held-out (only "
            "those of held-out prompts, which no training run uses)", choices=["all", "held-out"]),
        opt("--plot", ("rm",), "PNG of chosen vs rejected rewards (default: eval-<data>.png in "
            "the model folder)"),
        opt("--batch-size", EVAL_KINDS, "rm: pairs per batch; policy: prompts per generate call",
            type=int),
        opt("--out", ("rm", "policy"), "run folder for eval.json (policy: and the samples "
            "table; default: MODEL/eval-<time> for a run folder, else runs/ beside the "
            "database); rm: none unless given"),
        opt("--max-prompts", ("policy",), "the first N prompts only", type=int),
        opt("--max-new-tokens", ("policy",), "response length limit", type=int),
        opt("--temperature", ("policy",), "sampling temperature; 1.0 (the default) makes the KL "
            "estimate unbiased", type=float),
        opt("--seed", ("policy",), "sampling seed", type=int),
    ],
}


def add_options(sp, table: dict[str, list[Option]], all_kinds: tuple[str, ...]) -> None:
    """One argument group per section; each option's help says which kinds it applies to."""
    for title, options in table.items():
        group = sp.add_argument_group(title)
        for o in options:
            kwargs = dict(o.kwargs)
            if set(o.kinds) != set(all_kinds):
                kwargs["help"] = f"[{', '.join(k for k in all_kinds if k in o.kinds)}] {kwargs['help']}"
            group.add_argument(o.flag, **kwargs)


def applies(table: dict[str, list[Option]], flag: str, kind: str) -> bool:
    return any(o.flag == flag and kind in o.kinds for options in table.values() for o in options)


def refuse_options_not_for(kind: str, args, table: dict[str, list[Option]], command: str,
                           noun: str) -> None:
    """Exit 2 naming the first option given that does not apply to this kind."""
    for options in table.values():
        for o in options:
            if kind not in o.kinds and getattr(args, o.dest, None) is not None:
                why = o.hint or f"it applies to {command} {', '.join(o.kinds)}"
                raise CliError(f"{o.flag} is not an option of this {noun} ({command} {kind}; {why})")


def applying(table: dict[str, list[Option]], kind: str) -> list[str]:
    """The flags of ``table`` that apply to ``kind`` (the studio's forms offer only these)."""
    return [o.flag for options in table.values() for o in options if kind in o.kinds]
