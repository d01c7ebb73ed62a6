"""The one training-data loader: every stage that learns from labels (train rm, sft, dpo, rrhf
and eval rm) reads them here, from --data FILE or the store, with every filter applied
(--source, --min-agreement, --label-rounds, --principle); so do the stages that sample prompts
(rs, ppo, rloo) and `eval policy`. Held-out prompts (marked at import or in Browse) never reach
training: their labels are left out and rs/ppo/rloo never sample them; `eval policy` measures
on them. The store is opened read-only: under `accelerate launch` every process reads it at
once, and reading never changes it."""
from __future__ import annotations

import json

from .common import CliError, db_path, open_store

FILTER_OPTIONS = ("source", "min_agreement", "label_rounds", "principle")


def label_filters(args) -> dict:
    """The data filters given on the command line, as ``trainingdata`` keyword arguments."""
    rounds = None
    if getattr(args, "label_rounds", None):
        try:
            rounds = [int(r) for r in args.label_rounds.split(",")]
        except ValueError:
            raise CliError(f"--label-rounds: comma-separated round numbers, not {args.label_rounds!r}") from None
    return dict(source=getattr(args, "source", None) or "both", rounds=rounds,
                min_agreement=getattr(args, "min_agreement", None),
                principle=getattr(args, "principle", None))


def preference_data(args, path: str | None = None, *, include_held_out: bool = False,
                    only_held_out: bool = False):
    """TrainingData (pairs and rankings) from ``path`` (any import format) or, without one,
    from the store opened read-only; filtered by the command line's label filters. Labels of
    held-out prompts only with ``include_held_out`` (evaluation); ``only_held_out``: nothing
    but them."""
    from annotate import trainingdata
    filters = dict(label_filters(args), include_held_out=include_held_out,
                   only_held_out=only_held_out)
    try:
        if path:
            return trainingdata.from_file(path, **filters)
        with open_store(args.db, read_only=True) as db:
            return trainingdata.from_store(db, **filters)
    except ValueError as err:  # a bad file names its line and field
        raise CliError(str(err)) from None


def training_prompts(args) -> list[list[dict]]:
    """rs / ppo / rloo: the prompts to sample, from --prompts FILE (rows marked held_out
    skipped) or, without one, every prompt of the store that is not held out."""
    return _prompts(args, f"train {args.kind}", held_out=False,
                    none="has no prompts that are not held out; import some")


def evaluation_prompts(args) -> list[list[dict]]:
    """eval policy: --prompts FILE (every row), or the store's held-out prompts."""
    return _prompts(args, "eval policy", held_out=True,
                    none="has no held-out prompts; mark some (import --held-out, or Browse)")


def _prompts(args, command: str, held_out: bool, none: str) -> list[list[dict]]:
    from annotate import store
    from annotate.trainingdata import load_prompts
    if args.prompts:   # a file given for training drops its held-out rows; for eval keeps all
        return load_prompts(args.prompts, held_out=False if not held_out else None)
    path = db_path(args.db)
    if not path.exists():
        raise CliError(f"{command}: no --prompts FILE, and no database at {path} to take "
                       "prompts from")
    with open_store(args.db, read_only=True) as db:
        prompts = store.prompt_messages(db, held_out=held_out)
    if not prompts:
        raise CliError(f"{command}: {path} {none} or give --prompts FILE")
    return prompts


def where(args, path: str | None = None) -> str:
    """Where the data came from, for messages."""
    return str(path or db_path(args.db))


def policy_data(args) -> tuple[list, dict]:
    """train sft | dpo: chats (sft) or pairs (dpo), and their lineage (data hash, label ids)."""
    from policy.sft import chats_from_pairs, read_chats

    if args.kind == "sft" and args.data and is_chat_file(args.data):
        given = [f"--{name.replace('_', '-')}" for name in FILTER_OPTIONS
                 if getattr(args, name, None) is not None]
        if given:
            raise CliError(f"{given[0]}: {args.data} is a chat file; it has no labels to filter")
        return read_chats(args.data), {}
    data = preference_data(args, args.data)
    if not data.pairs:
        raise CliError(f"no preference pairs for train {args.kind} in {where(args, args.data)} "
                       "(check --source / --min-agreement / --label-rounds / --principle)")
    lineage = {"data_hash": data.data_hash,
               "label_ids": sorted({lid for p in data.pairs for lid in p.label_ids})}
    return (chats_from_pairs(data.pairs) if args.kind == "sft" else data.pairs), lineage


def is_chat_file(path: str) -> bool:
    """A JSONL file whose first record has "messages" is a chat file for SFT."""
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
    except OSError as err:
        raise CliError(f"{path}: {err.strerror}") from None
    try:
        return isinstance(row := json.loads(first), dict) and "messages" in row
    except json.JSONDecodeError:
        return False


def ranked_candidates(args) -> tuple[list, dict]:
    """train rrhf: each labelled task's candidates, scored by its labels (several annotators
    aggregated as the store's pairs are), and their lineage (data hash, label ids)."""
    from policy.rrhf import candidates_from_pairs

    data = preference_data(args, args.data)
    candidates = candidates_from_pairs(data.pairs)
    if not candidates:
        raise CliError(f"no ranked candidates for train rrhf in {where(args, args.data)}: it "
                       "needs labelled tasks (a rankings or pairs file, or labels in the store; "
                       "check --source / --min-agreement / --label-rounds / --principle), or "
                       "--prompts with --rm to sample and rank candidates")
    lineage = {"data_hash": data.data_hash,
               "label_ids": sorted({lid for c in candidates for lid in c.label_ids})}
    return candidates, lineage
