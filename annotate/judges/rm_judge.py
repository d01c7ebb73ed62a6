"""``rm:DIR``: a trained reward model as a judge.

The caller passes the reward model's scoring function (``rewardmodel.score``), so this layer
never loads a model:  ``score(prompts: list[list[dict]], responses: list[str]) -> list[float]``.
The preference follows the Bradley-Terry model the reward model was trained under
(Ouyang et al. 2022, eq. 1):

    p(A better than B) = sigmoid(r(x, A) - r(x, B))

A reward model sees each response alone, so the order cannot matter: asking both orders is
skipped (the labels' position-consistency flag stays empty).
"""
from __future__ import annotations

import json
import math
from typing import Callable

from .base import Judge, JudgeError, Verdict
from .prompt import Comparison

Scorer = Callable[[list[list[dict]], list[str]], list[float]]


class RewardModelJudge(Judge):
    position_invariant = True

    def __init__(self, score: Scorer, name: str):
        self.score = score
        self.name = name

    def judge(self, comparisons: list[Comparison]) -> list[Verdict | JudgeError]:
        # Score every distinct (conversation, response) once.
        keys, prompts, responses, index = [], [], [], {}
        for c in comparisons:
            for text in (c.first, c.second):
                key = (json.dumps(c.messages, sort_keys=True), text)
                if key not in index:
                    index[key] = len(keys)
                    keys.append(key)
                    prompts.append(c.messages)
                    responses.append(text)
        try:
            scores = [float(s) for s in self.score(prompts, responses)]
        except Exception as err:
            return [JudgeError("error", f"{type(err).__name__}: {err}")] * len(comparisons)
        out: list[Verdict | JudgeError] = []
        for c in comparisons:
            key = json.dumps(c.messages, sort_keys=True)
            r_a, r_b = scores[index[(key, c.first)]], scores[index[(key, c.second)]]
            if not (math.isfinite(r_a) and math.isfinite(r_b)):
                out.append(JudgeError("malformed", f"the reward model scored {r_a}, {r_b}"))
                continue
            p = 1.0 / (1.0 + math.exp(-(r_a - r_b))) if r_a - r_b > -700 else 0.0
            out.append(Verdict(p, text=f"{r_a:.4f} vs {r_b:.4f}",
                               info={"reward_first": r_a, "reward_second": r_b}))
        return out
