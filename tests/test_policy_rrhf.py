"""RRHF: the loss by hand, the shared-prompt pass, learning the labels' order, the CLI."""
import json
import random

import pytest
import torch

from annotate import store
from annotate.runlog import read_metrics, read_run
from annotate.trainingdata import PairExample
from policy.lm import load_policy, token_logprobs
from policy.losses import rrhf_loss
from policy.rewards import length_reward
from policy.rrhf import (Candidates, RRHFConfig, candidate_logps, candidates_from_pairs,
                         collate_candidates, ordered_pairs, tokenize_candidates, train_rrhf)
from app import main
from policy_helpers import TINY_LORA, metric_series, mean, shared_base_rm, tiny_prompts
from rewardmodel.model import RewardModel
from tiny_models import MARKERS, WORDS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_matches_a_hand_computed_example():
    # prompt 1: three candidates, scores 2 > 1 > 0;  prompt 2: a tie on top and a padded slot
    logps = torch.tensor([[-1.0, -0.5, -2.0], [-1.0, -3.0, -0.2]])
    scores = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    present = torch.tensor([[True, True, True], [True, True, False]])
    loss, rank, ft = rrhf_loss(logps, scores, present, sft_weight=0.5)
    # prompt 1, pairs (worse i, better j) with r_i < r_j: (1,0) max(0, −0.5+1) = 0.5;
    # (2,0) max(0, −2+1) = 0; (2,1) max(0, −2+0.5) = 0 → L_rank = 0.5; best = 0 → L_ft = 1.0
    # prompt 2: candidates 0 and 1 tie (no hinge although p_1 < p_0); the absent third has the
    # best log-prob and the lowest score but makes no pair → L_rank = 0; best = the first of the
    # tie, 0 → L_ft = 1.0
    assert rank.tolist() == pytest.approx([0.5, 0.0])
    assert ft.tolist() == pytest.approx([1.0, 1.0])
    assert loss.tolist() == pytest.approx([0.5 + 0.5 * 1.0, 0.5 * 1.0])
    # the default λ is the paper's 1; every misordered pair adds its own hinge
    _, rank, _ = rrhf_loss(torch.tensor([[-3.0, -2.0, -1.0]]), torch.tensor([[2.0, 1.0, 0.0]]),
                           torch.ones(1, 3, dtype=torch.bool))
    assert rank.item() == pytest.approx(1.0 + 2.0 + 1.0)
    assert ordered_pairs(logps, scores, present) == (2, 3)


def test_labels_become_scores_by_wins_minus_losses():
    prompt = [{"role": "user", "content": "q"}]
    pair = lambda c, r, task="t1", ids=("l1",): PairExample(prompt, c, r, task_id=task, label_ids=ids)
    # a ranking [[a], [b, c], [d]]: a beats b, c, d; b and c beat d; b and c tie
    pairs = [pair("a", "b"), pair("a", "c"), pair("a", "d"), pair("b", "d", ids=("l2",)),
             pair("c", "d"), pair("x", "y", task="t2")]
    first, second = candidates_from_pairs(pairs)
    assert dict(zip(first.responses, first.scores)) == {"a": 3.0, "b": 0.0, "c": 0.0, "d": -3.0}
    assert first.label_ids == ("l1", "l2") and second.scores == [1.0, -1.0]


def _ranked(n, seed=0):
    """Three candidates a prompt, scored 3, 2, 1: the best has two marker words, the worst none."""
    rng = random.Random(seed)
    plain = [w for w in WORDS if len(w) > 2]
    answer = lambda markers: " ".join(rng.sample(plain, 3) + rng.sample(MARKERS, markers))
    return [Candidates(prompt, [answer(2), answer(1), answer(0)], [3.0, 2.0, 1.0])
            for prompt in tiny_prompts(n, seed)]


def test_shared_prompt_pass_equals_one_pass_per_candidate(tiny_policy):
    model, tok = load_policy(str(tiny_policy))
    config = RRHFConfig()
    cands = _ranked(2)
    cands[1].responses = cands[1].responses[:2]            # fewer candidates: a padded slot
    cands[1].scores = cands[1].scores[:2]
    examples = [tokenize_candidates(tok, c, config) for c in cands]
    batch = collate_candidates(examples, tok.pad_token_id)
    assert batch["present"].tolist() == [[True] * 3, [True, True, False]]
    with torch.no_grad():
        got = candidate_logps(model, batch)
        for b, e in enumerate(examples):
            for k, response in enumerate(e["responses"]):
                ids = torch.tensor([e["prompt"] + response])
                logp = token_logprobs(model, ids, torch.ones_like(ids))[0, len(e["prompt"]) - 1:]
                assert got[b, k].item() == pytest.approx(logp.mean().item(), abs=1e-4)


def test_training_orders_the_candidates_like_the_labels(tiny_policy, tmp_path):
    train, held_out = _ranked(24, seed=1), _ranked(8, seed=2)
    config = RRHFConfig(model=str(tiny_policy), lr=5e-3, batch_size=8, max_steps=25,
                        save_every=10, lora=TINY_LORA)
    model, tok = load_policy(str(tiny_policy))
    batch = collate_candidates([tokenize_candidates(tok, c, config) for c in held_out],
                               tok.pad_token_id)
    with torch.no_grad():
        before = ordered_pairs(candidate_logps(model, batch), batch["scores"], batch["present"])
    out = train_rrhf(config, train, tmp_path / "rrhf")
    metrics = read_metrics(out)
    loss, ordered = metric_series(metrics, "loss"), metric_series(metrics, "pairs_ordered")
    rank = metric_series(metrics, "rank_loss")
    assert len(loss) == 25 and mean(loss[-5:]) < mean(loss[:5]) and mean(rank[-5:]) < mean(rank[:5])
    assert mean(ordered[-5:]) > mean(ordered[:5]) and ordered[-1] >= 0.9
    assert {"rank_loss", "sft_loss", "grad_norm"} <= {m["name"] for m in metrics}
    run = read_run(out)
    assert run["status"] == "done" and run["summary"]["prompts"] == 24
    # unseen prompts: the trained policy orders their candidates' p_i like the scores
    model, tok = load_policy(str(out))
    with torch.no_grad():
        after = ordered_pairs(candidate_logps(model, batch), batch["scores"], batch["present"])
    assert after[1] == before[1] == 24 and after[0] >= 20 and after[0] >= before[0] + 6


def test_a_resumed_run_continues_from_its_checkpoint(tiny_policy, tmp_path):
    config = RRHFConfig(model=str(tiny_policy), lr=5e-3, batch_size=4, max_steps=2,
                        save_every=1, lora=TINY_LORA)
    out = train_rrhf(config, _ranked(8), tmp_path / "run")
    config.max_steps = 4
    train_rrhf(config, _ranked(8), out)
    assert read_run(out)["summary"]["steps"] == 4
    assert sorted({m["step"] for m in read_metrics(out)}) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="different config"):
        train_rrhf(RRHFConfig(model=str(tiny_policy), sft_weight=2.0, max_steps=5,
                              lora=TINY_LORA), _ranked(8), out)


def test_a_resumed_sampled_run_neither_samples_nor_scores_again(tiny_policy, tmp_path):
    calls = []

    def reward(prompts, responses):   # words per response, counting the calls
        calls.append(len(responses))
        return length_reward()(prompts, responses)
    config = RRHFConfig(model=str(tiny_policy), k=3, batch_size=2, max_steps=1, lr=1e-2,
                        lora=TINY_LORA)
    config.sampling.max_new_tokens = 6
    out = train_rrhf(config, None, tmp_path / "run", prompts=tiny_prompts(4), reward_fn=reward)
    state = lambda: json.loads((out / "checkpoint" / "state.json").read_text())["state"]
    first, samples = state()["candidates"], (out / "responses.jsonl").read_text()
    assert calls == [12] and first and all(len(c["responses"]) >= 2 for c in first)
    config.max_steps = 2
    train_rrhf(config, None, out, prompts=tiny_prompts(4), reward_fn=reward)
    assert calls == [12] and state()["candidates"] == first
    assert (out / "responses.jsonl").read_text() == samples
    assert read_run(out)["summary"]["steps"] == 2


def test_bad_settings_are_refused_before_anything_is_written(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="two or more ranked candidates"):
        train_rrhf(RRHFConfig(model=str(tiny_policy)), [Candidates([], ["a"], [1.0])], tmp_path / "x")
    with pytest.raises(ValueError, match="need a reward"):
        train_rrhf(RRHFConfig(model=str(tiny_policy)), None, tmp_path / "x", prompts=[[]])
    with pytest.raises(ValueError, match="sft_weight"):
        train_rrhf(RRHFConfig(model=str(tiny_policy), sft_weight=-1), _ranked(2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- the command line -------------------------------------------------------------------------

RANKS = [   # one K-way task ranked by two annotators, one by a single annotator
    {"prompt": "rank these openings", "responses": ["once upon a time", "it was a dark night",
                                                    "call me zebra"],
     "ranking": [[2], [0, 1]], "annotator": "alice"},
    {"prompt": "rank these openings", "responses": ["once upon a time", "it was a dark night",
                                                    "call me zebra"],
     "ranking": [[2], [1], [0]], "annotator": "bob"},
    {"prompt": "tell me about the sun", "responses": ["the sun is hot", "zebra sun", "no",
                                                      "the sun is a star"],
     "ranking": [[3], [0], [1], [2]], "annotator": "alice"},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(tiny_policy, tmp_path, *argv):
    out = tmp_path / "run"
    code = main(["train", "rrhf", "--model", str(tiny_policy), "--max-steps", "2",
                 "--batch-size", "2", "--lr", "1e-2", "--lora-r", "4", "--out", str(out),
                 "--json", *argv])
    return code, out


def test_labels_of_several_annotators_are_aggregated_like_the_stores_pairs(tmp_path):
    from cli import parse_command
    from cli.data import ranked_candidates
    data = _write_jsonl(tmp_path / "ranks.jsonl", RANKS)
    args = parse_command(["train", "rrhf", "--data", str(data), "--out", str(tmp_path / "x")])
    candidates, lineage = ranked_candidates(args)
    scored = {c.prompt[0]["content"]: dict(zip(c.responses, c.scores)) for c in candidates}
    # both put "call me zebra" first; only bob ordered the other two: the majority of the one
    # vote that was cast for that pair decides it (alice's tie is no vote)
    assert scored["rank these openings"] == {"call me zebra": 2.0, "it was a dark night": 0.0,
                                             "once upon a time": -2.0}
    assert scored["tell me about the sun"] == {"the sun is a star": 3.0, "the sun is hot": 1.0,
                                               "zebra sun": -1.0, "no": -3.0}
    assert len(lineage["label_ids"]) == 3 and lineage["data_hash"]
    # --min-agreement drops the split pair: those two candidates tie
    args.min_agreement = 0.6
    candidates, _ = ranked_candidates(args)
    scored = {c.prompt[0]["content"]: dict(zip(c.responses, c.scores)) for c in candidates}
    assert scored["rank these openings"] == {"call me zebra": 2.0, "it was a dark night": -1.0,
                                             "once upon a time": -1.0}


def test_train_rrhf_from_the_store_records_lineage(tiny_policy, tmp_path, capsys):
    db_path = tmp_path / "ws.duckdb"
    assert main(["import", str(_write_jsonl(tmp_path / "ranks.jsonl", RANKS)),
                 "--db", str(db_path)]) == 0
    code, out = _train(tiny_policy, tmp_path, "--db", str(db_path), "--sft-weight", "0.5",
                       "--max-length", "40")
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = read_run(out)
    assert result["kind"] == "rrhf" and result["run"] == run["id"] and run["status"] == "done"
    assert run["config"]["sft_weight"] == 0.5
    assert (run["config"]["max_prompt_len"], run["config"]["max_response_len"]) == (20, 20)
    assert run["summary"]["prompts"] == 2 and run["summary"]["candidates"] == 7
    with store.Store(db_path) as db:
        labels = {r["id"] for r in db.query("SELECT id FROM labels")}
        inputs = {r["label_id"] for r in db.query("SELECT label_id FROM run_inputs WHERE run_id = ?",
                                                   [run["id"]])}
        kinds = [r["kind"] for r in db.query("SELECT kind FROM runs WHERE id = ?", [run["id"]])]
    assert inputs == labels and len(labels) == 3 and kinds == ["rrhf"]
    assert {"loss", "rank_loss", "sft_loss", "pairs_ordered"} <= {m["name"] for m in read_metrics(out)}


def test_train_rrhf_from_a_file_ordered_by_a_reward_model(tiny_policy, tmp_path, capsys):
    rm = shared_base_rm(tiny_policy, tmp_path / "rm")
    data = _write_jsonl(tmp_path / "ranks.jsonl", RANKS)
    code, out = _train(tiny_policy, tmp_path, "--data", str(data), "--rm", str(rm))
    assert code == 0, capsys.readouterr().err
    run = read_run(out)
    assert run["status"] == "done" and run["parents"] == []   # (the rm is not a run folder here)
    # every candidate scored by the reward model; the best by its score is the one kept
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 7 and {s["scorer"] for s in scores} == {f"rm:{rm.resolve()}"}
    trained = json.loads((out / "checkpoint" / "state.json").read_text())["state"]["candidates"]
    standalone = RewardModel.load(rm)
    for c in trained:
        expected = standalone.score([c["prompt"]] * len(c["responses"]), c["responses"]).tolist()
        assert c["scores"] == pytest.approx(expected, abs=1e-4)
    by_id = {s["response_id"]: s for s in scores}
    assert sum(s["kept"] for s in scores) == 2
    for c in trained:   # kept = the candidate the RM scores highest
        best = max(range(len(c["scores"])), key=c["scores"].__getitem__)
        pid = store.prompt_id(store.check_messages(c["prompt"]))
        assert by_id[store.response_id(pid, c["responses"][best])]["kept"]


def test_train_rrhf_samples_prompts_and_ranks_them_with_the_reward_model(tiny_policy, tmp_path,
                                                                          capsys):
    rm = shared_base_rm(tiny_policy, tmp_path / "rm")
    prompts = _write_jsonl(tmp_path / "prompts.jsonl",
                           [{"prompt": p[0]["content"]} for p in tiny_prompts(4)])
    db_path = tmp_path / "ws.duckdb"
    code, out = _train(tiny_policy, tmp_path, "--prompts", str(prompts), "--rm", str(rm),
                       "--k", "3", "--max-new-tokens", "6", "--temperature", "1.0",
                       "--max-length", "64", "--seed", "3", "--db", str(db_path))
    assert code == 0, capsys.readouterr().err
    run = read_run(out)
    assert run["status"] == "done" and run["config"]["k"] == 3 and run["config"]["seed"] == 3
    assert run["config"]["sampling"]["max_new_tokens"] == 6
    with store.Store(db_path) as db:   # the samples and their scores reached the store
        n = db.query("SELECT count(*) AS n FROM responses WHERE run_id = ?", [run["id"]])[0]["n"]
        kept = db.query("SELECT count(*) AS n FROM scores WHERE run_id = ? AND kept",
                        [run["id"]])[0]["n"]
    assert n >= 2 * run["summary"]["prompts"] and kept == run["summary"]["prompts"] >= 1


@pytest.mark.parametrize("argv, message", [
    (["--db", "EMPTY"], "no ranked candidates for train rrhf in"),
    (["--data", "PROMPTS"], "no ranked candidates for train rrhf in"),
    (["--prompts", "PROMPTS"], "--prompts: sampled candidates need --rm or --reward"),
    (["--k", "3", "--data", "PROMPTS"], "--k samples candidates: it needs --prompts"),
    (["--prompts", "PROMPTS", "--data", "PROMPTS", "--reward", "length"], "not both"),
    (["--prompts", "PROMPTS", "--reward", "length", "--packing"],
     "--packing is not an option of this trainer"),
])
def test_bad_input_exits_2_with_one_line(tiny_policy, tmp_path, capsys, argv, message):
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hello"}, {"prompt": "hi"}])
    store.Store(tmp_path / "empty.duckdb").close()
    paths = {"PROMPTS": str(prompts), "EMPTY": str(tmp_path / "empty.duckdb")}
    code, out = _train(tiny_policy, tmp_path, *[paths.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
