"""Direct Preference Optimization (Rafailov et al. 2023) and IPO (Azar et al. 2023) with LoRA.

One base model in memory. The reference log-probabilities are computed once, before the
first step, and cached (``reference_logps.pt`` in the run folder, so a resumed run reuses
them): the training loop then runs one forward pass per batch instead of two. Chosen and
rejected replies go through that pass together, concatenated after their shared prompt, and
short pairs share a row:

    [prompt₁ | chosen₁ | rejected₁ | prompt₂ | chosen₂ | rejected₂ | pad]

with a mask that hides the chosen reply from the rejected one and each pair from the others
(``collate_pairs``). The prompt is computed once per pair, little is padding, and only the
positions that predict reply tokens reach the LM head.

The reference is the policy before training. For a fresh adapter that is exactly the base
with the adapter disabled; when ``--model`` is an SFT run it is that SFT policy, which is
what DPO's π_ref should be. ``reference="base"`` uses the adapter-disabled base instead.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch

from harness.chat import render_chat, render_reply
from harness.packing import pack_groups_in_rows
from harness.run import shard_batches

from .lm import logprobs_from_logits, reference
from .losses import dpo_loss, ipo_loss
from .train_utils import PolicyRun, PolicySettings, load_for_training

LOSSES = ("sigmoid", "ipo")
REFERENCE_FILE = "reference_logps.pt"


@dataclass
class DPOConfig(PolicySettings):
    lr: float = 5e-5
    beta: float = 0.1                 # KL strength β (IPO: τ)
    loss: str = "sigmoid"             # "sigmoid" (DPO) or "ipo"
    margin_scale: float = 0.0         # offset = margin_scale × the label's margin (0: off)
    weight_by_agreement: bool = False  # scale each pair's loss by annotator agreement
    reference: str = "initial"        # "initial" (policy at step 0) or "base" (adapter off)
    max_prompt_len: int = 512         # prompt tokens kept (the oldest are cut)
    max_response_len: int = 512       # response tokens kept (the end is cut)
    # bf16 products where the hardware makes them fast (harness/precision.py): 1.3x on the
    # AMX CPU; the log-ratios carry ~0.1 nat of rounding noise and the same pairs train to the
    # same margins as in fp32 (BENCHMARKS.md, DPO)
    precision: str = "auto"


# --- data -------------------------------------------------------------------------------------

def response_text(tok, prompt: Sequence[dict], response: str) -> str:
    """What the chat template appends to the prompt for this assistant reply, including the
    end-of-turn token (so DPO also learns where a reply stops)."""
    before, full = render_reply(tok, prompt, response)
    return full[len(before):].rstrip()


def tokenize_pair(tok, pair, config: DPOConfig) -> dict:
    prompt = tok(render_chat(tok, list(pair.prompt)), add_special_tokens=False)["input_ids"]
    encode = lambda text: tok(response_text(tok, pair.prompt, text),
                              add_special_tokens=False)["input_ids"][:config.max_response_len]
    return {"prompt": prompt[-config.max_prompt_len:], "chosen": encode(pair.chosen),
            "rejected": encode(pair.rejected),
            "offset": config.margin_scale * float(pair.margin or 0.0),
            "weight": float(pair.weight) if config.weight_by_agreement else 1.0}


def collate_pairs(examples: list[dict], pad_id: int) -> dict:
    """Each pair as ``prompt, chosen, rejected`` with its prompt shared by both replies, and
    several pairs per row (``harness.packing.pack_groups_in_rows``):

        [prompt₁ chosen₁ rejected₁ prompt₂ chosen₂ rejected₂ | pad]   [prompt₃ chosen₃ rejected₃ …]

    The rejected reply sees its prompt but not the chosen one, no pair sees another, and
    position ids restart with each pair, so each reply is scored exactly as if it followed its
    prompt alone; the prompt goes through the model once, not twice. A row holds pairs until the
    next would make it longer than the batch's longest pair, so rows stay as short as the
    longest pair while the short pairs fill the padding the old one-pair-per-row layout had.

    ``source``/``target``: the flat positions (row·T + column) whose hidden states predict a
    reply token, and the positions of those tokens; ``owner``: 2b for pair b's chosen reply,
    2b + 1 for its rejected one.
    """
    groups = [(e["prompt"], [e["chosen"], e["rejected"]]) for e in examples]
    width = max(len(p) + sum(map(len, rs)) for p, rs in groups)
    packed, columns = pack_groups_in_rows(groups, pad_id, width)
    packed.pop("segments")
    source, target, owner = [], [], []
    for b, (prompt, *replies) in enumerate(columns):
        for k, reply in enumerate(replies):          # the first token from the prompt's last
            source += [prompt[-1], *reply[:-1]]
            target += reply
            owner += [2 * b + k] * len(reply)
    return {**packed,                         # input_ids, position_ids [R, T]; mask [R, 1, T, T]
            "source": torch.tensor(source), "target_ids": packed["input_ids"].view(-1)[target],
            "owner": torch.tensor(owner),                                             # [K]
            "index": torch.tensor([e["index"] for e in examples]),                   # [B]
            "offset": torch.tensor([e["offset"] for e in examples]),
            "weight": torch.tensor([e["weight"] for e in examples])}


def sequence_logps(model, batch: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) log π summed over reply tokens (or averaged, for IPO): [B], [B].

    Only the positions that predict a reply token reach the LM head: the forward pass (through
    ``model``, so DDP sees it) returns the final hidden states, the reply-predicting ones are
    picked out of every row, and the frozen LM head runs on those alone.
    """
    ids = batch["input_ids"]
    dtype = next(model.parameters()).dtype
    out = model(input_ids=ids, attention_mask=batch["attention_mask"].to(dtype),
                position_ids=batch["position_ids"], use_cache=False, logits_to_keep=1,
                output_hidden_states=True)
    hidden = out.hidden_states[-1]                                                    # [R, T, H]
    picked = hidden.reshape(-1, hidden.shape[-1])[batch["source"]]                   # [K, H]
    head = getattr(model, "module", model).get_output_embeddings()
    logp = logprobs_from_logits(head(picked)[None], batch["target_ids"][None])[0]   # [K]
    n = 2 * len(batch["index"])
    sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, batch["owner"], logp)
    if average:
        sums = sums / torch.bincount(batch["owner"], minlength=n).clamp(min=1)
    return sums[0::2], sums[1::2]                                                     # [B], [B]


def pairs_hash(pairs) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.prompt, p.chosen, p.rejected], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def planned_indices(n_items: int, config: DPOConfig, rank: int, world: int) -> list[int]:
    """The pairs this process trains on within ``max_steps`` (the run's own batch plan), so a
    short run does not score the reference of pairs it never sees."""
    need = config.max_steps * config.grad_accum             # micro-batches this process runs
    plan = shard_batches(n_items, config.batch_size, 0, config.seed, rank, world)
    # past one epoch every pair is visited; the processes' epoch-0 shards cover them all
    return sorted({i for batch in plan[:need] for i in batch})


@torch.no_grad()
def reference_logps(run: PolicyRun, examples: list[dict], config: DPOConfig,
                    data_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (chosen, rejected) log-probs of the pairs the run will train on: [N], [N]
    (NaN for a pair outside the plan of ``max_steps``).

    Each process scores its share, the shares are gathered, and the result is cached in the
    run folder, because after a resume the policy is no longer the initial one.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    acc = run.accelerator
    mine = planned_indices(len(examples), config, acc.process_index, acc.num_processes)
    path = run.dir / REFERENCE_FILE
    key = {"data": data_key, "reference": config.reference, "loss": config.loss,
           "max_prompt_len": config.max_prompt_len, "max_response_len": config.max_response_len}
    if path.exists():
        cached = torch.load(path)
        if cached["key"] == key and not cached["chosen"][mine].isnan().any():
            return cached["chosen"], cached["rejected"]
        if run.resumed:
            raise ValueError(f"{path} does not cover this run (other data, or more --max-steps "
                             "than the run started with); use a new --out")
    if run.resumed:
        raise ValueError(f"{path} is missing; cannot rebuild the initial reference after a resume")
    model = run.unwrapped
    was_training = model.training
    model.eval()
    scored = []
    bar = tqdm(total=len(mine), desc="reference log-probs", unit="pair",
               disable=not run.is_main, dynamic_ncols=True)
    for start in range(0, len(mine), config.batch_size):
        chunk = [examples[i] for i in mine[start:start + config.batch_size]]
        batch = {k: v.to(run.device) if torch.is_tensor(v) else v
                 for k, v in collate_pairs(chunk, run.tok.pad_token_id).items()}
        with reference(model) if config.reference == "base" else nullcontext():
            c, r = sequence_logps(model, batch, average=config.loss == "ipo")
        scored += list(zip(batch["index"].tolist(), c.tolist(), r.tolist()))
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    chosen = torch.full((len(examples),), float("nan"))
    rejected = torch.full((len(examples),), float("nan"))
    for i, c, r in gather_object(scored):
        chosen[i], rejected[i] = c, r
    if run.is_main:
        torch.save({"key": key, "chosen": chosen, "rejected": rejected}, path)
    return chosen, rejected


# --- training ---------------------------------------------------------------------------------

def train_dpo(config: DPOConfig, pairs: Sequence, out_dir: str | Path, *,
              parents: Sequence[str] = (), data_hash: str | None = None,
              label_ids: Sequence[str] = ()) -> Path:
    """DPO (or IPO) on preference pairs (``annotate.trainingdata.PairExample``)."""
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {config.loss!r}")
    if config.reference not in ("initial", "base"):
        raise ValueError(f"reference must be 'initial' or 'base', not {config.reference!r}")
    if min(config.max_prompt_len, config.max_response_len) < 1:
        raise ValueError("max_prompt_len and max_response_len must each be at least 1 token "
                         f"(got {config.max_prompt_len} and {config.max_response_len})")
    if not pairs:
        raise ValueError("no preference pairs to train on")
    model, tok = load_for_training(config)
    examples = [dict(tokenize_pair(tok, p, config), index=i) for i, p in enumerate(pairs)]
    with PolicyRun(config, out_dir, "dpo", model, tok, parents=parents,
                     data_hash=data_hash or pairs_hash(pairs), label_ids=label_ids) as run:
        ref_chosen, ref_rejected = reference_logps(run, examples, config, pairs_hash(pairs))
        ref_chosen, ref_rejected = ref_chosen.to(run.device), ref_rejected.to(run.device)
        batches = run.batches(examples, partial(collate_pairs, pad_id=tok.pad_token_id))
        ipo = config.loss == "ipo"
        stats = {}
        while not run.done:
            sums: dict[str, float] = {}
            for batch in run.accumulate(batches):
                chosen, rejected = sequence_logps(run.model, batch, average=ipo)      # [B], [B]
                rc, rr = ref_chosen[batch["index"]], ref_rejected[batch["index"]]   # [B], [B]
                if rc.isnan().any():   # planned_indices and run.batches disagree: a bug
                    raise RuntimeError("a batch holds a pair without a reference log-prob")
                if ipo:
                    losses = ipo_loss(chosen, rejected, rc, rr, config.beta)
                else:
                    losses = dpo_loss(chosen, rejected, rc, rr, config.beta, batch["offset"])
                loss = (losses * batch["weight"]).sum() / batch["weight"].sum()
                run.backward(loss)
                # implicit rewards r = β·(log π − log π_ref) (DPO paper, §5)
                reward_c = config.beta * (chosen - rc).detach()
                reward_r = config.beta * (rejected - rr).detach()
                step_stats = {"loss": loss.item(), "reward_chosen": reward_c.mean().item(),
                              "reward_rejected": reward_r.mean().item(),
                              "reward_margin": (reward_c - reward_r).mean().item(),
                              "reward_accuracy": (reward_c > reward_r).float().mean().item(),
                              "logp_chosen": chosen.detach().mean().item(),
                              "logp_rejected": rejected.detach().mean().item()}
                for k, v in step_stats.items():
                    sums[k] = sums.get(k, 0.0) + v / config.grad_accum
            grad_norm = run.optimizer_step()
            stats = run.metric(grad_norm=grad_norm, **sums)
            run.maybe_checkpoint()
        return run.finish(pairs=len(pairs), **{f"final_{k}": v for k, v in stats.items()})
