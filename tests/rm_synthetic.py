"""A synthetic preference for reward-model tests: the response holding a marker word wins.

Imported by tests/test_rm_*.py, and run as a script for the tests that need a real separate
process (kill-and-resume, ``accelerate launch``):

    python tests/rm_synthetic.py --base FOLDER --out DIR [--steps N] [--eval-every K] [--grad-accum A]

The script trains on ``marker_data(240)`` and, on every rank, writes ``rank<R>.json`` into the
run folder with a checksum of the trainable weights, so a test can tell whether all ranks
ended with one model.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from tiny_models import MARKERS, WORDS  # noqa: E402

from annotate.trainingdata import PairExample, RankingExample, TrainingData  # noqa: E402


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def marker_data(n: int, seed: int = 0, rankings: int = 0) -> TrainingData:
    """``n`` pairs (chosen holds the marker) and ``rankings`` 4-way rankings (the number of
    markers orders the responses)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        words = _sentence(rng, 3, 10).split()
        words.insert(rng.randint(0, len(words)), MARKERS[0])
        pairs.append(PairExample(prompt=[{"role": "user", "content": _sentence(rng, 2, 30)}],
                                 chosen=" ".join(words), rejected=_sentence(rng, 3, 10),
                                 task_id=f"p{seed}-{i}"))
    ranked = []
    for i in range(rankings):
        responses = []
        for k in range(4):  # response k holds 3 - k markers
            words = _sentence(rng, 3, 8).split()
            for _ in range(3 - k):
                words.insert(rng.randint(0, len(words)), MARKERS[0])
            responses.append(" ".join(words))
        order = list(range(4))
        rng.shuffle(order)
        ranked.append(RankingExample(prompt=[{"role": "user", "content": _sentence(rng, 2, 12)}],
                                     responses=[responses[j] for j in order],
                                     ranking=[[order.index(k)] for k in range(4)],
                                     task_id=f"r{seed}-{i}"))
    return TrainingData(pairs=pairs, rankings=ranked, data_hash=f"marker-{n}-{seed}-{rankings}")


def weights_checksum(model) -> float:
    return float(sum(p.detach().double().sum() * (i + 1)
                     for i, (_, p) in enumerate(model.trainable_parameters())))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--grad-accum", type=int, default=1)
    args = ap.parse_args()

    from accelerate import PartialState
    from rewardmodel.model import RewardModel
    from rewardmodel.train import RMConfig, train

    config = RMConfig(out=args.out, base=args.base, max_length=48, lora_r=8, lr=args.lr,
                      batch_size=args.batch_size, grad_accum=args.grad_accum,
                      max_steps=args.steps, eval_every=args.eval_every,
                      log_every=5, eval_fraction=0.1)
    from accelerate.utils import set_seed
    set_seed(config.seed)   # the head and LoRA init: the same in every run, so runs compare
    model = RewardModel.from_spec(args.base, max_length=48, lora=config.lora())
    summary = train(config, marker_data(240), model=model)
    state = PartialState()
    Path(args.out, f"rank{state.process_index}.json").write_text(json.dumps({
        "checksum": weights_checksum(model), "summary": summary,
        "processes": state.num_processes}))


if __name__ == "__main__":
    main()
