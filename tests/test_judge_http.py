"""The openai: judge against a real chat-completions server on 127.0.0.1 (tests/chat_server.py)."""
from __future__ import annotations

import json
import math

import pytest

from annotate import judges, store
from annotate.judges import JudgeConfig, OpenAIJudge, parse_judge_spec
from annotate.runlog import RunLog, read_records, read_run
from chat_server import ChatServer, Reply, text_reply, verdict
from judge_helpers import add_human, add_task, bt


def make_config(server: ChatServer, **kw) -> JudgeConfig:
    kw.setdefault("backoff", 0.001)
    return JudgeConfig(judge=parse_judge_spec(server.spec()).public, **kw)


def make_judge(server: ChatServer, config: JudgeConfig) -> OpenAIJudge:
    return judges.build_judge(parse_judge_spec(server.spec()), config)


def run(db, server, out, **config_kw):
    config = make_config(server, **config_kw)
    judge = make_judge(server, config)
    try:
        return judges.judge_store(db, judge, config, out, progress=False), config
    finally:
        judge.close()


def labels_of(db, name):
    return {r["task_id"]: r for r in store.ai_labels(db, name)}


def test_both_orders_cancel_a_position_bias_and_flag_consistency(db, tmp_path):
    # The judge's p(A) = true preference + 0.15 bias toward whatever is shown first.
    bias = 0.15
    with ChatServer(lambda r: verdict(min(0.99, bt(r.a, r.b) + bias))) as server:
        clear = add_task(db, "which?", ["q=2 clear winner", "q=0 loser"])       # bt = 0.88
        close = add_task(db, "which one?", ["q=0.2 nearly", "q=0 same"])        # bt = 0.55
        summary, config = run(db, server, tmp_path / "run", both_orders=True, tie_threshold=0.0)
        assert len(server.requests) == 4                       # two tasks, two orders each
    assert summary["judged"] == 2 and summary["failed"] == 0
    got = labels_of(db, config.name)

    x, y = clear["response_ids"]
    label = got[clear["id"]]
    assert label["ranking"] == [[x], [y]]
    # Order 1 reads p(x) = bt + bias, order 2 reads 1 - (bt(y, x) + bias) = bt - bias: mean = bt.
    expected = min(0.99, bt("q=2", "q=0") + bias) / 2 + (1 - (bt("q=0", "q=2") + bias)) / 2
    assert label["soft_prob"] == pytest.approx(expected, abs=1e-6)
    assert label["details"]["position_consistent"] is True
    orders = label["details"]["pairs"][0]["orders"]
    assert len(orders) == 2 and orders[0]["shown"] == orders[1]["shown"][::-1]

    x, y = close["response_ids"]
    label = got[close["id"]]
    # bt = 0.55: shown first it reads 0.70 for x; shown second 0.45 + 0.15 = 0.60 for y →
    # the two orders name different winners, the average still recovers 0.55 for x.
    assert label["details"]["position_consistent"] is False
    assert label["soft_prob"] == pytest.approx(bt("q=0.2", "q=0"), abs=1e-6)
    assert label["ranking"] == [[x], [y]]
    assert summary["position_consistency"] == 0.5


def test_soft_label_orientation_and_margin_levels(db, tmp_path):
    # p(A) straight from the responses: soft_prob must be p(ranking[0]) whichever was shown first.
    with ChatServer(lambda r: verdict(bt(r.a, r.b))) as server:
        tasks = {q: add_task(db, f"prompt {q}", [f"q=0 base {q}", f"q={q} other"])
                 for q in (3.0, 1.5, 0.7, 0.25)}
        _, config = run(db, server, tmp_path / "run", margins={"significantly": 0.9,
                                                               "better": 0.75, "slightly": 0.6})
    got = labels_of(db, config.name)
    levels = {}
    for q, task in tasks.items():
        label = got[task["id"]]
        base, other = task["response_ids"]
        p_other = 1 / (1 + math.exp(-q))
        assert label["ranking"] == [[other], [base]]
        assert label["soft_prob"] == pytest.approx(p_other, abs=1e-6)
        levels[q] = label["margin_level"]
    # p = 0.95, 0.82, 0.67, 0.56 → the four Llama-2 levels.
    assert levels == {3.0: "significantly", 1.5: "better", 0.7: "slightly", 0.25: "negligibly"}
    # The pairs SQL sees the AI labels as soft targets for the winner.
    pair = {p["task_id"]: p for p in store.pairs(db, source="ai")}
    assert pair[tasks[3.0]["id"]]["soft_prob"] == pytest.approx(1 / (1 + math.exp(-3.0)))


def test_near_tie_is_stored_as_a_tie_group(db, tmp_path):
    def brain(r):
        if "pos" in r.a:                  # a judge that only ever likes position A
            return verdict(0.8)
        return verdict(bt(r.a, r.b))
    with ChatServer(brain) as server:
        biased = add_task(db, "tie?", ["q=0 pos one", "q=0 pos two"])
        near = add_task(db, "almost?", ["q=0.1 one", "q=0 two"])        # p = 0.525
        clear = add_task(db, "clear?", ["q=0.5 one", "q=0 two"])        # p = 0.62
        _, config = run(db, server, tmp_path / "run", both_orders=True, tie_threshold=0.05)
    got = labels_of(db, config.name)
    for task in (biased, near):
        label = got[task["id"]]
        assert label["ranking"] == [task["response_ids"]]         # one tie group
        assert label["soft_prob"] is None and label["margin_level"] is None
    assert got[biased["id"]]["details"]["position_consistent"] is False
    assert got[near["id"]]["details"]["p_preferred"][near["response_ids"][0]] == pytest.approx(0.525, abs=1e-3)
    assert got[clear["id"]]["ranking"] == [[i] for i in clear["response_ids"]]
    # Ties give no training pair: only the clear task is left.
    assert [p["task_id"] for p in store.pairs(db, source="ai")] == [clear["id"]]


def test_k_way_task_judged_as_all_pairs_in_both_orders(db, tmp_path):
    with ChatServer(lambda r: verdict(bt(r.a, r.b))) as server:
        task = add_task(db, "rank these", ["q=0 worst", "q=4 best", "q=2 middle", "q=2.02 middle too"])
        _, config = run(db, server, tmp_path / "run", both_orders=True, tie_threshold=0.01)
        assert len(server.requests) == 6 * 2           # C(4, 2) pairs, both orders
    label = labels_of(db, config.name)[task["id"]]
    worst, best, mid, mid2 = task["response_ids"]
    assert label["ranking"] == [[best], [mid2, mid], [worst]]
    assert label["soft_prob"] is None
    assert label["details"]["pairs_both_orders"] == 6
    assert label["details"]["position_consistent"] is True
    assert set(label["details"]["scores"]) == set(task["response_ids"])


def test_retries_with_backoff_on_429_and_5xx(db, tmp_path):
    statuses = iter([429, 503, 500])

    def brain(r):
        status = next(statuses, 200)
        if status != 200:
            return Reply(status=status, json={"error": {"message": "slow down"}},
                         headers={"Retry-After": "0"} if status == 429 else {})
        return verdict(0.9)

    with ChatServer(brain) as server:
        task = add_task(db, "retry?", ["q=1 a", "q=0 b"])
        summary, config = run(db, server, tmp_path / "run", max_retries=3)
        assert len(server.requests) == 4                # three failures, then the answer
    assert summary["judged"] == 1 and summary["failed"] == 0
    assert task["id"] in labels_of(db, config.name)


def test_retries_give_up_and_client_errors_are_not_retried(db, tmp_path):
    def brain(r):
        if "q=9" in r.a + r.b:
            return Reply(status=404, json={"error": "no such model"})
        return Reply(status=502, raw=b"bad gateway")

    with ChatServer(brain) as server:
        add_task(db, "gone", ["q=9 a", "q=0 b"])
        add_task(db, "flaky", ["q=1 a", "q=0 b"])
        summary, _ = run(db, server, tmp_path / "run", max_retries=2)
        assert len(server.requests) == 1 + 3            # 404 once; 502 three times (1 + 2 retries)
    failures = read_records(tmp_path / "run", "failures")
    assert sorted(f["error"].split(" (after")[0][:13] for f in failures) == ["http: HTTP 40", "http: HTTP 50"]
    assert summary["judged"] == 0 and summary["failed"] == 2


def test_malformed_reply_and_no_verdict_fail_only_their_task_then_resume(db, tmp_path):
    broken = {"mode": True}

    def brain(r):
        if broken["mode"] and "q=7" in r.a + r.b:
            return Reply(raw=b'{"choices": [{"message": ')            # cut-off JSON
        if broken["mode"] and "q=8" in r.a + r.b:
            return text_reply("I would rather not choose between these.")
        return verdict(bt(r.a, r.b))

    with ChatServer(brain) as server:
        ok = [add_task(db, f"fine {i}", [f"q={i} a", "q=0 b"]) for i in range(3)]
        bad_json = add_task(db, "json", ["q=7 a", "q=0 b"])
        no_verdict = add_task(db, "undecided", ["q=8 a", "q=0 b"])
        summary, config = run(db, server, tmp_path / "run1")
        assert summary["judged"] == 3 and summary["failed"] == 2 and summary["status"] == "done"
        kinds = {f["task_id"]: f["kind"] for f in read_records(tmp_path / "run1", "failures")}
        assert kinds == {bad_json["id"]: "malformed", no_verdict["id"]: "no_verdict"}
        assert set(labels_of(db, config.name)) == {t["id"] for t in ok}

        broken["mode"] = False
        before = len(server.requests)
        summary, _ = run(db, server, tmp_path / "run2")
        assert summary["judged"] == 2 and summary["tasks"] == 2        # only what was missing
        assert len(server.requests) - before == 2
    assert len(labels_of(db, config.name)) == 5


def test_server_without_logprobs_gives_hard_labels(db, tmp_path):
    with ChatServer(lambda r: text_reply("**B**" if "q=1" in r.b else "A")) as server:
        task = add_task(db, "hard", ["q=0 a", "q=1 b"])
        _, config = run(db, server, tmp_path / "run", both_orders=True)
    label = labels_of(db, config.name)[task["id"]]
    a, b = task["response_ids"]
    assert label["ranking"] == [[b], [a]]
    assert label["details"]["hard"] is True
    assert label["soft_prob"] is None and label["margin_level"] is None


def test_verdict_after_leading_tokens_and_rationale_first(db, tmp_path):
    def brain(r):
        if r.body["max_tokens"] > 8:                     # rationale first: reason, then verdict
            reply = verdict(bt(r.a, r.b), leading="A is vague; B explains. Verdict: ")
            return reply
        return verdict(bt(r.a, r.b), leading=" ")
    with ChatServer(brain) as server:
        task = add_task(db, "reason", ["q=0 a", "q=2 b"])
        _, config = run(db, server, tmp_path / "direct")
        _, config2 = run(db, server, tmp_path / "cot", rationale_first=True, name="cot-judge")
    a, b = task["response_ids"]
    for name in (config.name, "cot-judge"):
        label = labels_of(db, name)[task["id"]]
        assert label["ranking"] == [[b], [a]]
        assert label["soft_prob"] == pytest.approx(bt("q=2", "q=0"), abs=1e-6)
    cot = store.current_label(db, task["id"], "cot-judge")
    assert cot["rationale"] == "A is vague; B explains."


def test_concurrency_is_bounded(db, tmp_path):
    with ChatServer(lambda r: Reply(**{**verdict(0.7).__dict__, "delay": 0.05})) as server:
        for i in range(6):
            add_task(db, f"c{i}", [f"q={i} a", "q=0 b"])
        run(db, server, tmp_path / "run", both_orders=True, batch_size=6,
            concurrency=3)
        assert len(server.requests) == 12
        assert 1 < server.max_in_flight <= 3


def test_server_dies_mid_run_keeps_successes_and_the_next_run_continues(db, tmp_path):
    served = {"n": 0}

    def brain(r):
        served["n"] += 1
        return verdict(bt(r.a, r.b))

    tasks = [add_task(db, f"task {i}", [f"q={i % 3} a", "q=1 b"]) for i in range(10)]
    server = ChatServer(brain)
    port = server.port
    spec = server.spec()
    config = make_config(server, batch_size=2, max_consecutive_failures=3, max_retries=1,
                         concurrency=1)
    judge = make_judge(server, config)
    original = judge.judge

    def judge_then_die(comparisons):          # the server goes away after the second batch
        results = original(comparisons)
        if served["n"] == 4:
            server.stop()
        return results

    judge.judge = judge_then_die
    summary = judges.judge_store(db, judge, config, tmp_path / "run", progress=False)
    judge.close()
    assert summary["status"] == "failed" and summary["judged"] == 4
    assert summary["failed"] == 4 and summary["not_reached"] == 2     # stopped after 3+ in a row
    run_json = read_run(tmp_path / "run")
    assert run_json["status"] == "failed" and "in a row" in run_json["error"]
    assert {f["kind"] for f in read_records(tmp_path / "run", "failures")} == {"connection"}
    assert store.get_run(db, run_json["id"])["status"] == "failed"
    assert len(labels_of(db, config.name)) == 4

    with ChatServer(brain, port=port) as again:                         # back up: resume
        judge = make_judge(again, config)
        summary = judges.judge_store(db, judge, config, tmp_path / "run", progress=False)
        judge.close()
        assert summary["tasks"] == 6 and summary["judged"] == 6
        assert len(again.requests) == 6
    assert set(labels_of(db, config.name)) == {t["id"] for t in tasks}
    assert read_run(tmp_path / "run")["status"] == "done"


def test_resume_in_the_same_folder_without_the_database(db, tmp_path):
    with ChatServer(lambda r: verdict(bt(r.a, r.b))) as server:
        for i in range(5):
            add_task(db, f"snap {i}", [f"q={i} a", "q=2 b"])
        config = make_config(server)
        tasks = store.tasks_lacking_label(db, config.name)
        out = tmp_path / "run"
        judge = make_judge(server, config)
        first = judges.run_judge(tasks[:3], judge, config, RunLog(out, "judge", config.to_json()),
                                 progress=False)
        second = judges.run_judge(tasks, judge, config, RunLog(out, "judge", config.to_json()),
                                  progress=False)
        judge.close()
        assert len(server.requests) == 5
    assert first["judged"] == 3 and second["judged"] == 2 and second["already_in_run"] == 3
    rows = read_records(out, "labels")
    assert len(rows) == 5
    assert store.add_labels(db, rows) == 5               # the rows are valid store labels
    assert store.add_labels(db, rows) == 0               # and ingesting twice adds nothing


def test_principle_is_sent_and_recorded(db, tmp_path):
    principles = tmp_path / "p.md"
    principles.write_text("## kindness\nPrefer the kinder response.\n\n## brevity\nPrefer the shorter one.\n")
    with ChatServer(lambda r: verdict(0.8)) as server:
        tasks = [add_task(db, f"p{i}", [f"q={i} a{i}", f"q=0 b{i}"]) for i in range(8)]
        _, fixed = run(db, server, tmp_path / "fixed", principles_file=str(principles),
                       principle="brevity")
        assert {r.principle for r in server.requests} == {"brevity"}
        assert fixed.name.endswith("@brevity")
        _, rnd = run(db, server, tmp_path / "random", principles_file=str(principles),
                     principle="random", name="mixed")
        sent = {frozenset((r.a, r.b)): r.principle for r in server.requests[8:]}
    assert set(sent.values()) == {"kindness", "brevity"}      # drawn per task (fixed by the ids)
    got = labels_of(db, "mixed")
    for t in tasks:
        assert got[t["id"]]["principle"] == sent[frozenset(t["text"].values())]
    assert {r["principle"] for r in labels_of(db, fixed.name).values()} == {"brevity"}


def test_agreement_report_against_the_human_majority(db, tmp_path):
    # The judge prefers the higher q (plus a +0.3 bias toward A); two people agree with it on
    # three tasks and both pick the other response on the fourth.
    tasks = [add_task(db, f"agree {i}", [f"q={q} a", "q=0 b"]) for i, q in enumerate([1, 2, -1, 3])]
    human, ai = [], []
    for i, t in enumerate(tasks):
        a, b = t["response_ids"]
        better, worse = (a, b) if "q=-1" not in t["text"][a] else (b, a)
        people = [[worse], [better]] if i == 3 else [[better], [worse]]
        for who in ("ann", "bob"):
            add_human(db, t, who, people)
        lo = min(a, b)
        human.append("lo" if people[0][0] == lo else "hi")
        ai.append("lo" if better == lo else "hi")
    with ChatServer(lambda r: verdict(min(0.99, bt(r.a, r.b) + 0.3))) as server:
        _, config = run(db, server, tmp_path / "run", both_orders=True, principle="harmlessness")
    report = judges.agreement_report(db)
    stats = report["judges"][config.name]
    assert report["human_majority_pairs"] == 4
    assert stats["n_pairs"] == 4 and stats["accuracy"] == 0.75 and stats["ties"] == 0
    from annotate.agreement import cohen_kappa
    assert stats["cohen_kappa"] == pytest.approx(cohen_kappa(human, ai))
    assert stats["principles"]["harmlessness"]["n_pairs"] == 4
    # With the +0.3 bias the q=1 and q=-1 pairs read differently in the two orders
    # (q=1: 0.99 for x first, 0.27 + 0.3 = 0.57 for y first), q=2 and q=3 stay consistent.
    assert stats["position_consistency"] == 0.5
    # First order alone: the biased reading still picks the judge's winner on q=2, q=3 (one of
    # which people reject) and, depending on which was shown first, on q=1 / q=-1.
    assert 0 <= stats["first_order_accuracy"] <= 1
    assert judges.agreement_report(db, "nobody") == {"human_majority_pairs": 4, "judges": {}}
