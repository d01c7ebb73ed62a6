"""Queue orders (active selection) on a hand-built store whose right order is known.

The reward model is programmatic: a response's reward is the number written at its end, so
the margin of each task is chosen here; the judge's labels are real AI label rows."""
import pytest
import torch

from annotate import store
from annotate.runlog import RunLog
from cli.queue_order import rank_rows
from rewardmodel.score import Ensemble, Member

MARGINS = [3.0, 0.1, 1.0, 0.5, 2.0, 0.05]      # task i: reward(A) - reward(B)
UNCERTAIN_FIRST = [5, 1, 3, 2, 4, 0]            # smallest |margin| first
JUDGE_PREFERS_B = (2, 4)                        # the judge disagrees with the RM here...
JUDGE_PREFERS_A = (0,)                          # ...and agrees here (the rest: no judge label)


class WrittenReward:
    """reward = the number after 'reward ' in the response (+ ``shift`` for given texts)."""

    def __init__(self, shift=None):
        self.shift = shift or {}

    def score(self, prompts, responses, *, batch_size=16, tags=None):
        return torch.tensor([float(r.rsplit("reward ", 1)[1]) + self.shift.get(r, 0.0)
                             for r in responses])


def build(db, required=1, rnd=0):
    """Six pairwise tasks with the MARGINS above and the judge's labels; their ids by index."""
    prompts, responses, tasks = [], [], []
    for i, margin in enumerate(MARGINS):
        prompt = store.prompt_row([{"role": "user", "content": f"Question {i}?"}], source="test")
        a = store.response_row(prompt["id"], f"Answer A to {i}, reward {margin}")
        b = store.response_row(prompt["id"], f"Answer B to {i}, reward 0.0")
        prompts.append(prompt)
        responses += [a, b]
        tasks.append(store.task_row(prompt["id"], [a["id"], b["id"]], round=rnd,
                                    required_labels=required))
    store.add_prompts(db, prompts)
    store.add_responses(db, responses)
    store.add_tasks(db, tasks)
    judged = []
    for i in JUDGE_PREFERS_A + JUDGE_PREFERS_B:
        a, b = tasks[i]["response_ids"]
        best_first = [[b], [a]] if i in JUDGE_PREFERS_B else [[a], [b]]
        judged.append(store.label_row(tasks[i], "judge-x", best_first, source="ai", judge="rm:x",
                                      margin_level="better"))
    store.add_labels(db, judged)
    store.create_run(db, "rm-sure", "rm", {}, status="done")
    return [t["id"] for t in tasks]


def rank_and_store(db, tmp_path, order, scorer=None, rnd=None):
    rows = rank_rows(store.priorities.tasks_to_rank(db, rnd), order, scorer,
                     "rm-sure" if scorer else "")
    log = RunLog(tmp_path / f"queue-order-{order}", "queue-order", {"order": order})
    log.record("priorities", rows)
    log.finish("done")
    store.ingest_run_dir(db, log.dir)
    return [r["task_id"] for r in rows]


def served(db, annotator="ann"):
    """Every task one annotator is handed, labelling each at once."""
    out = []
    while (t := store.next_task(db, annotator)) is not None:
        ids = store.get_task(db, t)["response_ids"]
        store.submit_label(db, annotator, t, [[ids[0]], [ids[1]]], margin_level="better")
        out.append(t)
    return out


def test_uncertainty_serves_the_least_separated_tasks_first(db, tmp_path):
    ids = build(db)
    ranked = rank_and_store(db, tmp_path, "uncertainty", WrittenReward())
    assert ranked == [ids[i] for i in UNCERTAIN_FIRST]
    store.priorities.set_queue_order(db, "uncertainty", "rm-sure")
    assert served(db) == [ids[i] for i in UNCERTAIN_FIRST]


def test_an_ensemble_whose_members_disagree_puts_that_task_first(db, tmp_path):
    ids = build(db)
    # the second member likes task 4's B better (its margin 2.0 becomes -0.5): a split vote
    flip = {"Answer B to 4, reward 0.0": 2.5}
    ensemble = Ensemble([Member(WrittenReward()), Member(WrittenReward(flip))])
    assert rank_and_store(db, tmp_path, "uncertainty", ensemble) == \
        [ids[i] for i in (4, 5, 1, 3, 2, 0)]


def test_disagreement_serves_where_judge_and_rm_part_first(db, tmp_path):
    ids = build(db)
    ranked = rank_and_store(db, tmp_path, "disagreement", WrittenReward())
    # the RM is 2.0 against the judge on task 4, 1.0 on task 2; it agrees on 0 (-3.0)
    assert ranked[:3] == [ids[4], ids[2], ids[0]]
    assert set(ranked[3:]) == {ids[1], ids[3], ids[5]}   # no judge label: last
    store.priorities.set_queue_order(db, "disagreement", "rm-sure", 0)
    assert served(db) == ranked


def test_default_order_is_the_hashed_order_and_comes_back(db, tmp_path):
    ids = build(db)
    before = store.upcoming_tasks(db, "ann", 6)
    rank_and_store(db, tmp_path, "uncertainty", WrittenReward())
    store.priorities.set_queue_order(db, "uncertainty", "rm-sure")
    assert store.upcoming_tasks(db, "ann", 6) == [ids[i] for i in UNCERTAIN_FIRST]
    store.priorities.set_queue_order(db, "default")
    assert store.upcoming_tasks(db, "ann", 6) == before


def test_a_round_of_its_own_keeps_its_order(db, tmp_path):
    ids = build(db, rnd=3)
    rank_and_store(db, tmp_path, "uncertainty", WrittenReward(), rnd=3)
    store.priorities.set_queue_order(db, "uncertainty", "rm-sure", 3)
    assert store.upcoming_tasks(db, "ann", 6) == [ids[i] for i in UNCERTAIN_FIRST]
    assert store.priorities.queue_orders(db)["3"]["order"] == "uncertainty"


@pytest.mark.parametrize("order", ["default", "uncertainty", "disagreement"])
def test_overlap_stays_fair_under_every_order(db, tmp_path, order):
    ids = build(db, required=2)
    if order != "default":
        rank_and_store(db, tmp_path, order, WrittenReward())
        store.priorities.set_queue_order(db, order, "rm-sure")
    done = {name: [] for name in ("ann", "bob", "cid")}
    first_labels = []
    for _ in range(6):
        for name in done:
            t = store.next_task(db, name)
            if t is not None:
                ids_ = store.get_task(db, t)["response_ids"]
                store.submit_label(db, name, t, [[ids_[0]], [ids_[1]]], margin_level="better")
                done[name].append(t)
                first_labels.append(t)
    per_task = {r["task_id"]: r["n"] for r in db.query(
        "SELECT task_id, count(*) AS n FROM labels WHERE source = 'human' GROUP BY task_id")}
    assert per_task == {t: 2 for t in ids}                       # exactly the overlap
    assert sorted(first_labels[:6]) == sorted(ids)               # every task once before twice
    assert all(len(set(v)) == len(v) for v in done.values())     # nobody labels a task twice
    assert sum(len(v) for v in done.values()) == 12
    if order == "uncertainty":
        assert first_labels[:6] == [ids[i] for i in UNCERTAIN_FIRST]


@pytest.mark.parametrize("order", ["uncertainty", "disagreement"])
def test_claims_hold_under_an_order(db, tmp_path, order):
    build(db)
    ranked = rank_and_store(db, tmp_path, order, WrittenReward())
    store.priorities.set_queue_order(db, order, "rm-sure")
    assert store.next_task(db, "ann") == ranked[0]
    assert store.next_task(db, "ann") == ranked[0]            # a reload shows the same task
    assert store.next_task(db, "bob") == ranked[1]            # ann holds the only slot of the top
    assert store.next_task(db, "cid", lease_s=0) == ranked[0]   # ann's lease ran out: freed
    store.priorities.set_queue_order(db, "default")           # a change keeps the claims
    assert store.next_task(db, "bob") == ranked[1]
    assert store.next_task(db, "cid") == ranked[0]


@pytest.mark.parametrize("order, rm, rnd, message", [
    ("fastest", None, None, "order must be one of"),
    ("uncertainty", None, None, "needs a reward model"),
    ("uncertainty", "rm-nope", None, "is not a reward-model run"),
    ("diverse", "rm-sure", None, "uses no reward model"),
    ("default", None, 9, "round 9 has no tasks"),
    ("default", None, -1, "round must be a round number"),
])
def test_bad_choices_are_refused_and_change_nothing(db, order, rm, rnd, message):
    build(db)
    with pytest.raises(store.StoreError, match=message):
        store.priorities.set_queue_order(db, order, rm, rnd)
    assert store.priorities.queue_orders(db) == {}


def test_diverse_alternates_between_prompt_clusters_with_minilm(db, tmp_path):
    """The real MiniLM embeddings: two topics, two clusters, served in turn."""
    topics = ["How do I bake sourdough bread at home?", "What flour is best for pizza dough?",
              "How long should I knead bread dough?",
              "How do I reverse a list in Python?", "What is a Python dictionary comprehension?",
              "How do I read a CSV file in Python?"]
    prompts, responses, tasks = [], [], []
    for q in topics:
        p = store.prompt_row([{"role": "user", "content": q}], source="test")
        a, b = (store.response_row(p["id"], f"{x} reward 0") for x in ("One way.", "Another."))
        prompts.append(p)
        responses += [a, b]
        tasks.append(store.task_row(p["id"], [a["id"], b["id"]]))
    store.add_prompts(db, prompts)
    store.add_responses(db, responses)
    store.add_tasks(db, tasks)
    rows = rank_rows(store.priorities.tasks_to_rank(db), "diverse", None, "", clusters=2)
    topic = {t["id"]: i // 3 for i, t in enumerate(tasks)}
    served_topics = [topic[r["task_id"]] for r in rows]
    assert served_topics in ([0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0])
    assert len({r["cluster"] for r in rows}) == 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import studio_server
    srv = studio_server.start(tmp_path_factory.mktemp("queue-order"), seed=build)
    yield srv
    srv.close()


def test_only_admins_choose_the_order_over_json(server):
    from annotation_data import snapshot

    def post(session, _, name, **kwargs):
        answer = session.post(server.url + f"api/{name}", json=kwargs)
        return answer.status_code, answer.json()
    before = snapshot(server.db)
    for user in ("ann", None):
        status, out = post(server.session(user), server, "set_queue_order", order="diverse")
        assert 400 <= status < 500, (user, status, out)
    assert snapshot(server.db) == before and store.priorities.queue_orders(server.db) == {}
    admin = server.session("admin1")
    status, out = post(admin, server, "set_queue_order", order="uncertainty", rm="rm-nope")
    assert status == 400 and "not a reward-model run" in out["error"]
    status, out = post(admin, server, "set_queue_order", order="uncertainty", rm="rm-sure", round=0)
    assert status == 200 and out["order"] == "uncertainty" and out["round"] == 0, out
    assert out["scoring_run"].startswith("queue-order-")    # nothing ranked yet: a job ranks them
    job = server.studio.jobs.runs / out["scoring_run"] / "job.json"
    assert '"queue-order", "--tasks"' in job.read_text()
    post(admin, server, "stop_job", run_id=out["scoring_run"])
    status, view = post(admin, server, "queue_order")
    assert status == 200 and view["chosen"]["0"]["order"] == "uncertainty"
    assert view["chosen"]["0"]["set_by"] == "admin1"


def test_the_panel_shows_what_each_order_is_based_on(server, tmp_path):
    import studio_server
    admin = server.session("admin1")
    fns = studio_server.endpoints(admin, server.url)
    rank_and_store(server.db, tmp_path, "uncertainty", WrittenReward())
    out = studio_server.raw_call(admin, server.url, fns["ui_queue_order_set"],
                                 ["uncertainty", "rm-sure", "0"])
    assert out["error"] is None, out
    result, table = out["output"]
    assert result["scoring_run"] is None          # every task of round 0 is ranked already
    rows = {(r[0], r[2]): r for r in table["data"]}
    based_on = rows[("uncertainty", "rm-sure")]
    assert based_on[3] == "6" and based_on[4] == "0" and based_on[1] == "round 0 (rm-sure)"
    assert [r[0] for r in table["data"]].count("default") == 1
    out = studio_server.raw_call(admin, server.url, fns["ui_queue_order_set"], ["default", "", "x"])
    assert "round must be a round number" in (out["error"] or ""), out
    assert store.priorities.queue_orders(server.db)["0"]["order"] == "uncertainty"
    # a reward model left picked while choosing an order that uses none is no error
    out = studio_server.raw_call(admin, server.url, fns["ui_queue_order_set"], ["default", "rm-sure", "0"])
    assert out["error"] is None and store.priorities.queue_orders(server.db)["0"]["rm"] is None


def test_prefetch_hint_widens_with_the_annotators_on_a_ranked_front(db, tmp_path):
    """Under a ranked order everyone walks the same front: the texts worth prefetching for
    one annotator are the next n per annotator at work, not n (service.py prefetches these)."""
    ids = build(db)
    rank_and_store(db, tmp_path, "uncertainty", WrittenReward())
    store.priorities.set_queue_order(db, "uncertainty", "rm-sure")
    for name in ("ann", "bob"):
        store.next_task(db, name)
    hint = store.upcoming_tasks(db, "cid", 2)
    assert hint == [ids[i] for i in UNCERTAIN_FIRST[2:6]]   # 2 x 2 at work, past the taken two
