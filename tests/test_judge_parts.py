"""The judge's pieces on their own: verdict reading, principles, aggregation, kappa, specs."""
from __future__ import annotations

import json
import math

import pytest

from annotate.agreement import cohen_kappa
from annotate.judges import (JudgeConfig, JudgeConfigError, PrinciplesError, load_principles,
                             parse_judge_spec, parse_verdict_text, ranking_from_pairs,
                             select_principle, verdict_from_logprobs)
from annotate.judges.aggregate import combine_orders, pairwise_label
from annotate.judges.principles import DEFAULT_FILE


def tok(token, logprob, top=None):
    return {"token": token, "logprob": logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in (top or [])]}


def test_logprob_verdict_sums_spellings_and_normalises_over_the_options():
    tokens = [tok(" A", -0.5, [(" A", -0.5), ("A", -2.0), (" B", -1.5), ("The", -3.0)])]
    p, info = verdict_from_logprobs(tokens, ("A", "B"), rationale_first=False)
    pa, pb = math.exp(-0.5) + math.exp(-2.0), math.exp(-1.5)
    assert p == pytest.approx(pa / (pa + pb))
    assert info["bounded"] == []


def test_an_option_missing_from_top_logprobs_gets_its_largest_possible_mass():
    # B is not listed: it can have at most min(least listed p, 1 - listed total) = 0.05.
    tokens = [tok("A", math.log(0.8), [("A", math.log(0.8)), ("I", math.log(0.15))])]
    p, info = verdict_from_logprobs(tokens, ("A", "B"), rationale_first=False)
    assert p == pytest.approx(0.8 / (0.8 + 0.05))
    assert info["bounded"] == ["B"]


def test_rationale_first_reads_the_token_after_the_last_verdict():
    tokens = [tok("A", -0.1, [("A", -0.1)]), tok(" is fine. Verdict", -0.1), tok(":", -0.1),
              tok(" B", math.log(0.7), [(" B", math.log(0.7)), (" A", math.log(0.3))])]
    p, info = verdict_from_logprobs(tokens, ("A", "B"), rationale_first=True)
    assert p == pytest.approx(0.3) and info["position"] == 3
    assert verdict_from_logprobs([tok("Hmm", -0.1)], ("A", "B"), False) is None


@pytest.mark.parametrize("text,rationale,want", [
    ("A", False, "A"), (" **B**", False, "B"), ("Response A.", False, "A"), ("B\n", False, "B"),
    # A direct answer is read from its first word (the judge is asked for the letter alone),
    # so a sentence starting with the article "A" reads as A; "Verdict: X" needs no such luck.
    ("A good question; I pick B", False, "A"), ("Neither.", False, None),
    ("Both are fine... Verdict: B", True, "B"), ("verdict: **A**", True, "A"),
    ("I think A is better", True, None), ("Verdict: C", False, None),
])
def test_parse_verdict_text(text, rationale, want):
    assert parse_verdict_text(text, ("A", "B"), rationale) == want


def test_both_orders_average_and_consistency():
    assert combine_orders(0.7, None) == (0.7, None)
    assert combine_orders(0.9, 0.7) == (pytest.approx(0.8), True)
    assert combine_orders(0.8, 0.4) == (pytest.approx(0.6), False)


def test_pairwise_label_ties_margins_and_hard_verdicts():
    margins = {"significantly": 0.9, "better": 0.75, "slightly": 0.6}
    assert pairwise_label("x", "y", 0.52, 0.05, margins, hard=False)["ranking"] == [["x", "y"]]
    lab = pairwise_label("x", "y", 0.2, 0.05, margins, hard=False)
    assert lab == {"ranking": [["y"], ["x"]], "soft_prob": pytest.approx(0.8), "margin_level": "better"}
    assert pairwise_label("x", "y", 1.0, 0.05, margins, hard=True) == {
        "ranking": [["x"], ["y"]], "soft_prob": None, "margin_level": None}
    assert pairwise_label("x", "y", 0.5, 0.0, margins, hard=False)["ranking"] == [["x", "y"]]


def test_k_way_ranking_groups_within_the_tie_threshold():
    p = {("a", "b"): 0.9, ("a", "c"): 0.9, ("b", "c"): 0.52}
    groups, scores = ranking_from_pairs(["a", "b", "c"], p, tie=0.05)
    assert groups == [["a"], ["b", "c"]]
    assert scores["a"] == pytest.approx(0.9) and scores["b"] == pytest.approx((0.1 + 0.52) / 2)
    assert ranking_from_pairs(["a", "b", "c"], p, tie=0.0)[0] == [["a"], ["b"], ["c"]]
    # K = 2 reduces to the pairwise rule |p - 1/2| <= tie.
    assert ranking_from_pairs(["a", "b"], {("a", "b"): 0.54}, tie=0.05)[0] == [["a", "b"]]
    assert ranking_from_pairs(["a", "b"], {("a", "b"): 0.56}, tie=0.05)[0] == [["a"], ["b"]]


def test_cohen_kappa():
    # Classic 2x2 example: 20 items, agreement 0.7, chance 0.5 → kappa 0.4.
    a = ["y"] * 10 + ["n"] * 10
    b = ["y"] * 7 + ["n"] * 3 + ["y"] * 3 + ["n"] * 7
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(["y", "y"], ["y", "y"]) == 1.0        # p_e = 1: defined by agreement
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_default_principles_and_bad_files(tmp_path):
    names = [p.name for p in load_principles(DEFAULT_FILE)]
    assert names == ["harmlessness", "helpfulness", "honesty"]
    assert select_principle(load_principles(), None).name == "harmlessness"
    assert select_principle(load_principles(), "random") is None
    with pytest.raises(PrinciplesError, match="not in the principles file"):
        select_principle(load_principles(), "speed")
    bad = tmp_path / "bad.md"
    bad.write_text("# title\n\n## ok\ntext\n\n## empty\n\n## ok\nagain\n")
    with pytest.raises(PrinciplesError, match=r"bad.md:6: empty: the principle has no text"):
        load_principles(bad)
    js = tmp_path / "p.json"
    js.write_text('{"kind": "Prefer kindness.", "short": "Prefer brevity."}')
    assert [p.name for p in load_principles(js)] == ["kind", "short"]
    js.write_text('{"kind": ')
    with pytest.raises(PrinciplesError, match="p.json:1: invalid JSON"):
        load_principles(js)


def test_judge_specs_hide_credentials():
    spec = parse_judge_spec("openai:https://user:s3cret@api.example.com:8443/v1?key=abc#gpt-x")
    assert spec.public == "openai:https://api.example.com:8443/v1#gpt-x"
    assert "s3cret" not in spec.public and "abc" not in spec.public
    assert parse_judge_spec("local:smollm2-135m-instruct").public == "local:smollm2-135m-instruct"
    assert parse_judge_spec("rm:runs/rm1").kind == "rm"
    for bad in ("gpt4", "openai:http://x/v1", "openai:ftp://x#m", "remote:x", "local:"):
        with pytest.raises(JudgeConfigError):
            parse_judge_spec(bad)


def test_config_checks_and_names():
    assert JudgeConfig(judge="local:m").name == "local:m"
    assert JudgeConfig(judge="local:m", principle="honesty").name == "local:m@honesty"
    for bad in ({"tie_threshold": 0.5}, {"labels": ("A", "A")}, {"batch_size": 0},
                {"margins": {"better": 0.3}}, {"limit": -1}):
        with pytest.raises(JudgeConfigError):
            JudgeConfig(judge="local:m", **bad)


def test_reward_model_judge_is_bradley_terry_and_asks_one_order(db, tmp_path):
    from annotate import judges, store
    from annotate.runlog import RunLog
    from judge_helpers import add_task, quality
    calls = []

    def score(prompts, responses):            # stands in for rewardmodel.score's .score
        calls.append(len(responses))
        return [quality(r) for r in responses]

    task = add_task(db, "rank", ["q=1.0 a", "q=-0.5 b", "q=0.2 c"])
    config = JudgeConfig(judge="rm:runs/rm1", both_orders=True)
    judge = judges.build_judge(parse_judge_spec(config.judge), config, scorer=score)
    judges.run_judge(store.tasks_lacking_label(db, config.name), judge, config,
                     RunLog(tmp_path / "run", "judge", config.to_json()), progress=False)
    assert calls == [3]                        # each response scored once, one order per pair
    row = [json.loads(l) for l in (tmp_path / "run" / "labels.jsonl").read_text().splitlines()][0]
    a, b, c = task["response_ids"]
    assert row["ranking"] == [[a], [c], [b]]
    details = json.loads(row["details"])
    p_ab = next(p for p in details["pairs"] if {p["x"], p["y"]} == {a, b})
    want = 1 / (1 + math.exp(-1.5))
    assert (p_ab["p_x"] if p_ab["x"] == a else 1 - p_ab["p_x"]) == pytest.approx(want)
    assert details["position_consistent"] is None and len(p_ab["orders"]) == 1
