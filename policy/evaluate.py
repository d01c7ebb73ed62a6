"""``prefstudio eval policy``: is the trained policy better than its reference, and at what cost?

On held-out prompts, the policy (adapter on) and the reference (the same base, adapter off)
each answer every prompt with the same sampling settings and the same random seed. Reported:

    reward_policy, reward_reference   mean reward-model score of each side
    win_rate                          share of prompts where the policy's answer scores higher
                                      (ties count one half); judge_win_rate likewise under an
                                      AI judge, when one is given (both orders, averaged)
    kl                                KL(π ‖ π_ref) per response in nats: the mean over the
                                      policy's samples of Σ_t log π(y_t) − log π_ref(y_t)
                                      (policy.measure; unbiased when temperature = 1, top_p = 1);
                                      null, with ``kl_note`` saying why, unless the policy is
                                      local and the reference is its own base
    length_policy, length_reference   mean response length in tokens: a policy that wins by
                                      writing ever longer answers is hacking the reward model
    samples                           a side-by-side table (Markdown) of the first answers, and
                                      every answer with its scores in samples.jsonl

The reference is the policy's base with its adapter off, or ``reference_model``: any model
spec, folder or run, or a served ``openai:URL#MODEL``. A served policy (``openai:...``,
``policy.served``) needs one, and its answers come from the server with the same sampling
settings and seed; the reward model scores both sides here as it does for a local policy.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .generate import SamplingParams
from .lm import load_policy, reference
from .measure import sample_responses
from .rewards import RewardFn, bind_reward, score_in_batches
from .served import ServerSettings, is_served

KL_SERVED = ("a served model gives no log-probabilities of the reference's tokens, so "
             "KL(policy || reference) cannot be computed")
KL_OTHER_REFERENCE = "KL is measured against the policy's own base only (no --reference)"

# judge(prompts, policy_texts, reference_texts) -> p(policy's answer is better) per prompt,
# None where the judge could not decide
JudgeFn = Callable[[Sequence[list[dict]], Sequence[str], Sequence[str]], list]


def eval_sampling() -> SamplingParams:
    return SamplingParams(max_new_tokens=128, temperature=1.0, top_p=1.0, max_prompt_tokens=512,
                          seed=0)


@dataclass
class PolicyEvalConfig:
    sampling: SamplingParams = field(default_factory=eval_sampling)
    batch_size: int = 16              # prompts per generate call
    max_prompts: int | None = None    # evaluate on the first N prompts only
    table_rows: int = 20              # answers shown side by side in samples.md

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.sampling.seed is None:
            raise ValueError("eval needs a sampling seed: both sides must see the same noise")


def evaluate_policy(model: str, prompts: Sequence[list[dict]], reward_fn: RewardFn,
                    out_dir: str | Path, cfg: PolicyEvalConfig | None = None, *,
                    judge: JudgeFn | None = None, reward_name: str = "",
                    reference_model: str | None = None,
                    server: ServerSettings | None = None) -> dict:
    """Compare a policy (run folder, adapter, model spec or served ``openai:`` spec) with its
    reference; write samples; return JSON. ``server`` holds the served sides' settings."""
    cfg = cfg or PolicyEvalConfig()
    cfg.check()
    prompts = list(prompts)[:cfg.max_prompts] if cfg.max_prompts else list(prompts)
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    rows, ref_rows, kl_note = _both_sides(model, reference_model, prompts, reward_fn, cfg,
                                          server or ServerSettings())
    pol = {key: [r[key] for r in rows] for key in ("text", "finished", "tokens", "kl")}
    ref = {key: [r[key] for r in ref_rows] for key in ("text", "finished", "tokens")}
    pol["texts"], ref["texts"] = pol.pop("text"), ref.pop("text")

    r_pol = score_in_batches(reward_fn, prompts, pol["texts"])                   # [N]
    r_ref = score_in_batches(reward_fn, prompts, ref["texts"])
    wins = (r_pol > r_ref).float() + 0.5 * (r_pol == r_ref).float()
    mean = lambda xs: float(sum(xs) / len(xs))
    result = {
        "model": _public(str(model)), "reward": reward_name, "n": len(prompts),
        "reward_policy": r_pol.mean().item(), "reward_reference": r_ref.mean().item(),
        "reward_gain": (r_pol - r_ref).mean().item(),
        "win_rate": wins.mean().item(),
        "kl": None if kl_note else mean(pol["kl"]),
        "length_policy": mean(pol["tokens"]), "length_reference": mean(ref["tokens"]),
        "finished_policy": mean(pol["finished"]), "finished_reference": mean(ref["finished"]),
    }
    if reference_model is not None:
        result["reference"] = _public(reference_model)
    if kl_note:
        result["kl_note"] = kl_note
    if judge is not None:
        p_better = judge(prompts, pol["texts"], ref["texts"])
        decided = [p for p in p_better if p is not None]
        result["judge_win_rate"] = mean(decided) if decided else None
        result["judge_decided"] = len(decided)
    else:
        p_better = [None] * len(prompts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": p, "policy": a, "reference": b, "reward_policy": float(ra),
             "reward_reference": float(rb), "kl": kl, "tokens_policy": ta, "tokens_reference": tb,
             "judge_p_policy": pj}
            for p, a, b, ra, rb, kl, ta, tb, pj in zip(
                prompts, pol["texts"], ref["texts"], r_pol.tolist(), r_ref.tolist(), pol["kl"],
                pol["tokens"], ref["tokens"], p_better)]
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "samples.md").write_text(samples_table(rows[:cfg.table_rows], result), encoding="utf-8")
    result.update(samples=str(out / "samples.md"), samples_jsonl=str(out / "samples.jsonl"),
                  config=asdict(cfg))
    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return result


def _both_sides(model, reference_model, prompts, reward_fn, cfg, server) -> tuple[list, list, str | None]:
    """Each side's answers ``[{"text", "finished", "tokens", "kl"}]`` and why KL is missing."""
    if not is_served(model) and reference_model is None:
        policy, tok = load_policy(model)
        bind_reward(reward_fn, policy, tok)
        # both sides start from the same seed: identical weights would give identical answers
        rows = sample_responses(policy, tok, prompts, cfg.sampling, batch_size=cfg.batch_size)
        with reference(policy):
            ref_rows = sample_responses(policy, tok, prompts, cfg.sampling,
                                        batch_size=cfg.batch_size, with_kl=False)
        return rows, ref_rows, None
    if reference_model is None:
        raise ValueError("a served --model needs --reference (a local model, run folder or "
                         "another openai:URL#MODEL): a server cannot switch its adapter off")
    if hasattr(reward_fn, "bind"):
        raise ValueError("this reward model shares a local policy's backbone; score a served "
                         "policy with a reward model of its own")
    note = KL_SERVED if is_served(model) or is_served(reference_model) else KL_OTHER_REFERENCE
    return (_answers(model, prompts, cfg, server), _answers(reference_model, prompts, cfg, server),
            note)


def _answers(spec: str, prompts, cfg: PolicyEvalConfig, server: ServerSettings) -> list[dict]:
    """One answer per prompt from a local model (in batches) or a served one (concurrently)."""
    if not is_served(spec):
        model, tok = load_policy(spec)
        return sample_responses(model, tok, prompts, cfg.sampling, batch_size=cfg.batch_size,
                                with_kl=False)
    from .served import ServedModel, Wanted, generate_served
    served = ServedModel(spec, server)
    rows: list[dict | None] = [None] * len(prompts)

    def take(i, candidates, complete):
        c = candidates[0]
        rows[i] = {"text": c["text"], "finished": c["finished"], "tokens": c["tokens"], "kl": None}
    try:
        s = cfg.sampling
        generate_served(served, [Wanted(list(p), 0, 1) for p in prompts], [s.temperature],
                        top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=s.seed,
                        on_prompt=take)
    finally:
        served.close()
    return rows


def _public(spec: str) -> str:
    from .served import public_spec
    return public_spec(spec) if is_served(spec) else spec


def samples_table(rows: list[dict], result: dict) -> str:
    """Markdown: one row per prompt, the reference's and the policy's answers side by side."""
    def cell(text: str, limit: int = 400) -> str:
        text = " ".join(str(text).split())
        text = text if len(text) <= limit else text[:limit - 1] + "…"
        return text.replace("|", "\\|") or "(empty)"

    lines = [f"# {result['model']}: policy vs reference",
             "",
             f"reward {result['reward'] or '(custom)'}: policy {result['reward_policy']:.3f}, "
             f"reference {result['reward_reference']:.3f}, win rate {result['win_rate']:.2f}, "
             f"KL {'n/a' if result['kl'] is None else format(result['kl'], '.2f')} nats, length {result['length_policy']:.1f} vs "
             f"{result['length_reference']:.1f} tokens",
             "",
             "| # | prompt | reference | policy | reward ref | reward policy |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        prompt = r["prompt"][-1]["content"] if r["prompt"] else ""
        lines.append(f"| {i} | {cell(prompt, 200)} | {cell(r['reference'])} | {cell(r['policy'])} "
                     f"| {r['reward_reference']:.3f} | {r['reward_policy']:.3f} |")
    return "\n".join(lines) + "\n"


def judge_preferences(judge, principle) -> JudgeFn:
    """Adapt an ``annotate.judges`` Judge to eval's JudgeFn: each pair judged in both orders
    (policy first, then reference first) and the two verdicts averaged, so position bias cancels."""
    from annotate.judges import Comparison, JudgeError

    def prefer(prompts, policy_texts, reference_texts) -> list:
        comparisons = []
        for messages, a, b in zip(prompts, policy_texts, reference_texts):
            comparisons.append(Comparison(list(messages), a, b, principle))
            comparisons.append(Comparison(list(messages), b, a, principle))
        verdicts = judge.judge(comparisons)
        out = []
        for first, second in zip(verdicts[0::2], verdicts[1::2]):
            ok = [v for v in (first, second) if not isinstance(v, JudgeError)]
            if len(ok) < 2:
                out.append(None)
            else:
                out.append((first.p_first + (1.0 - second.p_first)) / 2)
        return out
    prefer.judge = judge    # the caller closes it
    return prefer
