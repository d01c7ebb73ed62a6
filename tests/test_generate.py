"""Batched generation, the candidate job and ``prefstudio generate``, with the tiny in-test model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from annotate import store
from annotate.runlog import read_records, read_run
from policy.candidates import GenerateConfig, generate_candidates
from policy.generate import SamplingParams, generate, sample
from policy.lm import load_policy
from harness.chat import render_chat

ROOT = Path(__file__).resolve().parent.parent
SHORT = [{"role": "user", "content": "hi"}]
LONG = [{"role": "system", "content": "you are a helpful cat"},
        {"role": "user", "content": "tell me a long story about the sun and the moon please"},
        {"role": "assistant", "content": "sure here is one"},
        {"role": "user", "content": "make it short and happy"}]
MIDDLE = [{"role": "user", "content": "what is python code for a sort of a list"}]


@pytest.fixture(scope="module")
def lm(tiny_policy):
    # tiny_policy's larger init gives peaked logits, so greedy choices are not near-ties that
    # float rounding could flip between a padded batch and a lone prompt
    return load_policy(str(tiny_policy))


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0)


def test_sample_shapes_and_left_padding(lm):
    model, tok = lm
    roll = sample(model, tok, [SHORT, LONG, MIDDLE], greedy(12))
    B, T = roll.input_ids.shape
    P = roll.prompt_len
    assert B == 3 and T == P + roll.response_ids.shape[1] and roll.response_ids.shape[1] <= 12
    assert roll.attention_mask.shape == roll.response_mask.shape == (B, T)
    assert len(roll.texts) == len(roll.finished) == B
    # the longest prompt fills P; shorter ones are padded on the left (mask 0 first, then 1s)
    prompt_mask = roll.attention_mask[:, :P]
    assert prompt_mask[1].all()
    assert not prompt_mask[0].all() and prompt_mask[0, -1] == 1
    assert (prompt_mask.diff(dim=1) >= 0).all()  # once real tokens start, no more padding
    assert (roll.input_ids[0, :P][prompt_mask[0] == 0] == tok.pad_token_id).all()
    assert roll.response_mask[:, :P].sum() == 0


def test_left_padded_batch_gives_the_same_greedy_output_as_one_prompt_alone(lm):
    model, tok = lm
    batch = sample(model, tok, [SHORT, LONG, MIDDLE], greedy(16))
    for row, messages in enumerate([SHORT, LONG, MIDDLE]):
        alone = sample(model, tok, [messages], greedy(16))
        n = int(alone.response_mask.sum())
        assert batch.response_ids[row, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert int(batch.response_mask[row].sum()) == n
        assert batch.texts[row] == alone.texts[0]


@pytest.mark.parametrize("penalty", [1.0, 1.8], ids=["plain", "repetition-penalty"])
def test_own_decode_loop_matches_transformers_generate_when_greedy(lm, penalty):
    """sample's decode loop (prefill in groups of 8 cut to their own longest prompt, the KV
    cache written in place) against ``model.generate`` on the same left-padded batch: 11
    prompts of different lengths, so the prefill runs as two groups of different widths. With
    a repetition penalty the loop must read every token so far (prompt padding included, as
    ``generate`` does), also after finished rows have left the batch."""
    import dataclasses
    model, tok = lm
    prompts = [[{"role": "user", "content": "word " * n}] for n in range(1, 23, 2)]
    enc = tok([render_chat(tok, m) for m in prompts], return_tensors="pt", padding=True,
              add_special_tokens=False)
    P = enc["input_ids"].shape[1]
    params = dataclasses.replace(greedy(10), repetition_penalty=penalty)
    if penalty != 1.0:   # the penalty changes the answers, or this case tests nothing
        assert not torch.equal(sample(model, tok, prompts, params).response_ids,
                               sample(model, tok, prompts, greedy(10)).response_ids)
    eos = model.generation_config.eos_token_id
    try:
        for extra_eos in ([], None):
            if extra_eos is None:
                # rows end at different steps: a token some rows' greedy answers contain and
                # others do not becomes an end token, so a quarter or more of the rows leave
                # the batch while the others run on
                free = sample(model, tok, prompts, params).response_ids
                rows_with = {int(t): int((free == t).any(-1).sum()) for t in free.unique()}
                extra_eos = [next(t for t, n in sorted(rows_with.items()) if 3 <= n <= 8)]
            model.generation_config.eos_token_id = [tok.eos_token_id, *extra_eos]
            roll = sample(model, tok, prompts, params)
            want = model.generate(**enc, max_new_tokens=10, do_sample=False,
                                  repetition_penalty=penalty, pad_token_id=tok.pad_token_id,
                                  eos_token_id=[tok.eos_token_id, *extra_eos])[:, P:]
            mask = roll.response_mask[:, roll.prompt_len:].bool()
            assert roll.response_ids.shape == want.shape
            assert torch.equal(roll.response_ids[mask], want[mask])
        assert 3 <= sum(roll.finished) <= 8                  # some ended, the others ran on
    finally:
        model.generation_config.eos_token_id = eos


def test_tokens_after_eos_are_masked_and_not_decoded(tiny_policy):
    model, tok = load_policy(str(tiny_policy))
    free = sample(model, tok, [SHORT, LONG], greedy(12))
    # declare the 4th greedy token of the first prompt an end-of-sequence token: generation of
    # that row must stop there while the other row may run on
    stop = int(free.response_ids[0, 3])
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    roll = sample(model, tok, [SHORT, LONG], greedy(12))
    ids, mask = roll.response_ids[0], roll.response_mask[0, roll.prompt_len:]
    first = ids.tolist().index(stop)
    assert first <= 3 and roll.finished[0]
    assert mask[:first + 1].all() and not mask[first + 1:].any()   # EOS itself is kept
    assert roll.attention_mask[0, roll.prompt_len + first + 1:].sum() == 0
    kept = ids[:first].tolist()
    assert roll.texts[0] == tok.decode(kept, skip_special_tokens=True).strip()
    assert roll.texts[0] != free.texts[0]
    other = int(roll.response_mask[1].sum())
    assert other == roll.response_ids.shape[1] or roll.finished[1]


def test_seed_makes_sampling_reproducible(lm):
    model, tok = lm
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=7)
    first = generate(model, tok, [SHORT, LONG, MIDDLE], params, k=2, batch_size=4, progress=False)
    again = generate(model, tok, [SHORT, LONG, MIDDLE], params, k=2, batch_size=4, progress=False)
    other = generate(model, tok, [SHORT, LONG, MIDDLE],
                     SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=8),
                     k=2, batch_size=4, progress=False)
    texts = lambda result: [[c["text"] for c in row] for row in result]
    assert texts(first) == texts(again)
    assert texts(first) != texts(other)


def test_k_candidates_per_prompt_with_temperatures_cycled(lm):
    model, tok = lm
    params = [SamplingParams(max_new_tokens=6, temperature=t, seed=1) for t in (0.0, 1.5)]
    result = generate(model, tok, [SHORT, LONG, MIDDLE], params, k=3, batch_size=2, progress=False)
    assert [len(row) for row in result] == [3, 3, 3]
    for i, row in enumerate(result):
        assert [c["params"] for c in row] == [0, 1, 0]
        # candidates 0 and 2 are greedy (temperature 0): identical, and equal to a lone greedy run
        assert row[0]["text"] == row[2]["text"]
        alone = sample(model, tok, [[SHORT, LONG, MIDDLE][i]], greedy(6))
        assert row[0]["text"] == alone.texts[0]
        assert all(0 < c["tokens"] <= 6 for c in row)


def test_candidate_job_writes_run_folder_and_responses_lines(lm, tmp_path):
    model, tok = lm
    config = GenerateConfig(model="tiny", k=4, temperatures=[0.0, 1.0, 1.2, 0.0], max_new_tokens=8,
                            seed=3, batch_size=4, task="mixed", round=2)
    lines, summary = generate_candidates(config, [SHORT, LONG, MIDDLE], tmp_path / "run",
                                         model=model, tok=tok, progress=False)
    # ranking (all 3 distinct: candidates 0 and 3 are both greedy, the repeat is left out),
    # pairwise on the first and last distinct candidate + the rest without a task, ranking
    assert [(line["prompt"], line["task"], len(line["responses"])) for line in lines] == [
        (SHORT, "ranking", 3), (LONG, "pairwise", 2), (LONG, "none", 1), (MIDDLE, "ranking", 3)]
    temps = lambda line: [r["gen_params"]["temperature"] for r in line["responses"]]
    assert temps(lines[0]) == [0.0, 1.0, 1.2] and temps(lines[1]) == [0.0, 1.2]
    assert temps(lines[2]) == [1.0]
    for line in lines:
        texts = [r["text"] for r in line["responses"]]
        assert len(texts) == len(set(texts)) and line["round"] == 2
        assert all(r["model"] == "tiny" and r["adapter"] is None for r in line["responses"])
    assert summary["prompts"] == 3 and summary["responses"] == 9 and summary["dropped"] == 3
    assert summary["ranking_tasks"] == 2 and summary["pairwise_tasks"] == 1

    run = read_run(tmp_path / "run")
    assert run["kind"] == "generate" and run["status"] == "done"
    assert run["config"]["temperatures"] == [0.0, 1.0, 1.2, 0.0]
    assert run["summary"]["responses"] == 9
    records = read_records(tmp_path / "run", "responses")
    assert sorted(r["text"] for r in records) == sorted(r["text"] for line in lines
                                                        for r in line["responses"])
    grouped = [r for r in records if "group" in r]
    assert len(grouped) == 3 + 2 + 3 and all(r["round"] == 2 for r in grouped)
    assert {r["group"] for r in grouped} == {store.prompt_id(m) for m in (SHORT, LONG, MIDDLE)}


def test_run_folder_and_out_file_load_into_the_same_store_rows(lm, tmp_path):
    """The run folder (ingest_run_dir) and the --out lines (import_file) say the same thing."""
    from annotate import formats
    model, tok = lm
    config = GenerateConfig(model="tiny", k=3, temperatures=[0.8, 1.3], max_new_tokens=6, seed=1,
                            batch_size=8, task="mixed")
    lines, _ = generate_candidates(config, [SHORT, LONG, MIDDLE], tmp_path / "run",
                                   model=model, tok=tok, progress=False)
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    contents = []
    for name, load in (("a", lambda db: store.ingest_run_dir(db, tmp_path / "run")),
                       ("b", lambda db: formats.import_file(db, out))):
        with store.Store(tmp_path / f"{name}.duckdb") as db:
            load(db)
            contents.append((
                sorted((r["prompt_id"], r["text"], r["model"], json.dumps(r["gen_params"], sort_keys=True))
                       for r in store.list_responses(db)),
                sorted((t["id"], t["kind"], t["round"]) for t in store.list_tasks(db))))
    assert contents[0] == contents[1]
    assert len(contents[0][1]) == 3 and {k for _, k, _ in contents[0][1]} == {"ranking", "pairwise"}


def test_policy_run_folder_is_recorded_as_base_plus_adapter_and_parent(tiny_policy, tmp_path):
    from annotate.runlog import RunLog
    from harness.lora import LoraSettings
    from policy.lm import save_policy
    policy, tok = load_policy(str(tiny_policy), lora=LoraSettings(r=4), trainable=True)
    torch.manual_seed(0)
    for name, weight in policy.named_parameters():
        if "lora_B" in name:  # a fresh adapter is a no-op; make this one change the outputs
            weight.data.normal_(0, 1.0)
    run = RunLog(tmp_path / "sft-run", "sft", {"base": str(tiny_policy)})
    save_policy(policy, tok, tmp_path / "sft-run", base_spec=str(tiny_policy))
    run.finish()

    config = GenerateConfig(model=str(tmp_path / "sft-run"), k=1, temperatures=[0.0],
                            max_new_tokens=8)
    lines, _ = generate_candidates(config, [SHORT, LONG], tmp_path / "gen", progress=False)
    items = [r for line in lines for r in line["responses"]]
    assert {r["model"] for r in items} == {str(Path(tiny_policy).resolve())}
    assert {r["adapter"] for r in items} == {str((tmp_path / "sft-run" / "adapter").resolve())}
    assert read_run(tmp_path / "gen")["parents"] == [run.id]
    base = generate(*load_policy(str(tiny_policy)), [SHORT, LONG], greedy(8), progress=False)
    assert [r["text"] for r in items] != [row[0]["text"] for row in base]


def test_bad_generate_config_is_refused():
    for bad in (dict(k=0), dict(k=10), dict(task="triples"), dict(k=1, task="ranking"),
                dict(temperatures=[-1.0]), dict(top_p=0.0), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            GenerateConfig(**bad).check()


def test_store_lists_prompts_short_of_k_responses_from_a_model(db):
    rows = [store.prompt_row(m) for m in (SHORT, LONG, MIDDLE)]
    store.add_prompts(db, rows)
    short, long_, middle = (r["id"] for r in rows)
    store.add_responses(db, [
        store.response_row(short, "one", model="m"), store.response_row(short, "two", model="m"),
        store.response_row(long_, "one", model="m"), store.response_row(long_, "two", model="other"),
        store.response_row(middle, "one", model="m", adapter="/a"),
        store.response_row(middle, "two", model="m", adapter="/a")])
    need = lambda **kw: {r["id"]: r["have"] for r in store.prompts_needing_responses(db, **kw)}
    assert need(k=2, model="m") == {long_: 1, middle: 0}
    assert need(k=2, model="m", adapter="/a") == {short: 0, long_: 0}
    assert need(k=3, model="m") == {short: 2, long_: 1, middle: 0}
    assert len(store.prompts_needing_responses(db, k=3, model="m", limit=1)) == 1
    assert store.prompts_needing_responses(db, k=1, model="m")[0]["messages"] == MIDDLE
    with pytest.raises(store.StoreError):
        store.prompts_needing_responses(db, k=0, model="m")


# --- the command line ---------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFSTUDIO_WORKSPACE": "/nonexistent-workspace"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def write_prompts(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_writes_responses_file(tiny_lm, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"prompt": "hello how are you"}, {"prompt": LONG, "tags": ["writing"]},
        {"prompt": "hello how are you"}, {"prompt": "你好"}])
    out = tmp_path / "out" / "responses.jsonl"
    done = run_cli("generate", "--model", str(tiny_lm), "--prompts", str(prompts), "--k", "3",
                   "--temperature", "0.7,1.3", "--max-new-tokens", "6",   # default --task: ranking
                   "--limit", "2", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    # the repeated prompt counts once; --limit 2 keeps the first two
    assert result["prompts"] == 2 and result["out"] == str(out)
    assert [line["prompt"] for line in lines] == [[{"role": "user", "content": "hello how are you"}], LONG]
    for line in lines:
        temps = [r["gen_params"]["temperature"] for r in line["responses"]]
        assert temps[0] == 0.7 and set(temps) <= {0.7, 1.3}
        assert all(r["model"] == str(Path(tiny_lm).resolve()) for r in line["responses"])
        assert line["task"] == ("ranking" if len(line["responses"]) == 3 else "pairwise")
    assert result["responses"] == sum(len(line["responses"]) for line in lines)


def test_cli_generates_into_the_store_and_stops_when_every_prompt_has_k(tiny_lm, tmp_path):
    path = tmp_path / "ws" / "studio.duckdb"
    with store.Store(path) as db:
        store.add_prompts(db, [store.prompt_row(m, source="test") for m in (SHORT, LONG, MIDDLE)])
    args = ["generate", "--db", str(path), "--model", str(tiny_lm), "--k", "2",
            "--temperature", "1.0", "--max-new-tokens", "6", "--seed", "5", "--task", "pairwise",
            "--round", "1", "--json"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["prompts"] == 3 and Path(result["run_dir"]).parent == path.parent / "runs"
    with store.Store(path) as db:
        responses = db.query("SELECT * FROM responses")
        tasks = db.query("SELECT * FROM tasks")
        run = db.query("SELECT * FROM runs")
    assert len(responses) == result["responses"] == result["added"]["responses"]
    assert 3 <= len(responses) <= 6
    assert {r["model"] for r in responses} == {str(Path(tiny_lm).resolve())}
    params = json.loads(responses[0]["gen_params"])
    assert params["temperature"] == 1.0 and params["max_new_tokens"] == 6 and params["seed"] == 5
    assert {r["run_id"] for r in responses} == {run[0]["id"]} and run[0]["kind"] == "generate"
    assert Path(result["run_dir"]).name == run[0]["id"] and run[0]["status"] == "done"
    assert len(tasks) == result["pairwise_tasks"] and all(t["kind"] == "pairwise" for t in tasks)
    assert all(t["round"] == 1 for t in tasks)

    again = run_cli(*args)  # every prompt that got 2 distinct answers is done
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["prompts"] == 3 - len(tasks)


@pytest.mark.parametrize("content, where", [
    (b'{"prompt": "fine"}\nnot json\n', ":2: (row)"),
    (b'{"text": "no prompt"}\n', ":1: prompt"),
    (b'{"prompt": [{"role": "assistant", "content": "x"}]}\n', ":1: prompt"),
    (b'{"prompt": "caf\xe9"}\n', ""),           # Latin-1 bytes, not UTF-8
    (b"\n", ""),                                   # no prompts at all
])
def test_cli_bad_prompts_file_exits_2_with_one_line_and_leaves_the_store(tiny_lm, tmp_path, content,
                                                                          where):
    path = tmp_path / "studio.duckdb"
    with store.Store(path) as db:
        store.add_prompts(db, [store.prompt_row(SHORT)])
    prompts = tmp_path / "bad.jsonl"
    prompts.write_bytes(content)
    done = run_cli("generate", "--db", str(path), "--model", str(tiny_lm), "--prompts", str(prompts))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("prefstudio generate: ")
    assert f"{prompts}{where}" in done.stderr
    with store.Store(path) as db:
        assert store.counts(db) == {"prompts": 1, "responses": 0, "tasks": 0, "labels": 0}
        assert db.query("SELECT * FROM runs") == []


def test_cli_bad_options_exit_2(tiny_lm, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    for args, why in ((["--k", "0"], "--k"), (["--task", "ranking", "--k", "1"], "at least 2"),
                      (["--top-p", "1.5"], "--top-p"), (["--out", str(tmp_path / "x.csv")], "JSONL")):
        done = run_cli("generate", "--model", str(tiny_lm), "--prompts", str(prompts),
                       "--out", str(tmp_path / "o.jsonl"), *args)
        assert done.returncode == 2 and why in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_the_sample_project_loads_64_prompts_with_4_candidates_each(db):
    from annotate import formats
    from app import SAMPLE_PROJECT
    assert formats.load_sample_project(db, SAMPLE_PROJECT) == {"prompts": 64, "responses": 256,
                                                               "tasks": 64}
    prompts = store.list_prompts(db)
    responses = store.list_responses(db)
    tasks = store.list_tasks(db)
    tags = [t for p in prompts for t in p["tags"]]
    for tag, least in (("advice", 10), ("coding", 10), ("facts", 10), ("writing", 10),
                       ("refusal", 8), ("multi-turn", 8), ("zh", 8)):
        assert tags.count(tag) >= least, tag
    assert sum(len(p["messages"]) > 1 for p in prompts) >= 8
    per_prompt = {}
    for r in responses:
        per_prompt.setdefault(r["prompt_id"], []).append(r)
    assert len(per_prompt) == 64 and all(len(rs) == 4 for rs in per_prompt.values())
    for rs in per_prompt.values():
        assert {r["model"] for r in rs} == {"smollm2-135m-instruct"}
        assert sorted(r["gen_params"]["temperature"] for r in rs) == [0.3, 0.7, 1.0, 1.2]
    kinds = [t["kind"] for t in tasks]
    assert kinds.count("ranking") == kinds.count("pairwise") == 32
    by_id = {r["id"]: r for r in responses}
    for t in tasks:  # pairwise tasks compare the coolest and the hottest sample
        temps = sorted(by_id[rid]["gen_params"]["temperature"] for rid in t["response_ids"])
        assert temps == ([0.3, 1.2] if t["kind"] == "pairwise" else [0.3, 0.7, 1.0, 1.2])


def test_a_new_round_from_the_same_model_makes_new_tasks(tiny_lm, tmp_path, db):
    """Tasks are content-addressed: with one seed for every round, round 1 from the model of
    round 0 repeated round 0's texts and made no task. The seed follows --round by default."""
    from cli import main
    prompts = write_prompts(tmp_path / "prompts.jsonl", [{"prompt": SHORT}, {"prompt": LONG}])
    for rnd in (0, 1):
        folder = tmp_path / f"round-{rnd}"
        assert main(["generate", "--run-only", "--prompts", str(prompts), "--run-dir", str(folder),
                     "--model", str(tiny_lm), "--k", "2", "--temperature", "1.0",
                     "--max-new-tokens", "6", "--round", str(rnd), "--json"]) in (0, None)
        store.ingest_run_dir(db, folder)
    tasks = {rnd: {r["id"] for r in db.query("SELECT id FROM tasks WHERE round = ?", [rnd])}
             for rnd in (0, 1)}
    assert len(tasks[0]) == len(tasks[1]) == 2 and not tasks[0] & tasks[1]
    seeds = {json.loads(r["gen_params"])["seed"] for r in db.query("SELECT gen_params FROM responses")}
    assert seeds == {0, 1}


def test_nucleus_keeps_the_tokens_transformers_keeps():
    """policy.generate.nucleus against transformers' TopPLogitsWarper: the same tokens kept
    with their probabilities, on peaked rows (the top 16 hold the nucleus) and on flat ones
    (they do not: sorted in full, and the candidates widen past 16)."""
    import torch
    from transformers import TopPLogitsWarper
    from policy.generate import nucleus

    torch.manual_seed(0)
    peaked = torch.randn(6, 5000, dtype=torch.float64) * 6
    flat = torch.randn(4, 5000, dtype=torch.float64) * 0.1
    scores = torch.cat([peaked, flat])
    probs = scores.softmax(-1)
    ids = torch.zeros(10, 3, dtype=torch.long)
    for top_p in (0.5, 0.9, 0.95):
        assert (probs[:6].topk(16).values.sum(-1) >= top_p).any()   # both paths run
        assert (probs[6:].topk(16).values.sum(-1) < top_p).all()
        want = ~torch.isinf(TopPLogitsWarper(top_p=top_p)(ids, scores.clone()))   # [B, V]
        index, weight = nucleus(probs, top_p, k=16)
        assert index.shape[1] > 16                                 # the flat rows widened it
        got = torch.zeros_like(want)
        got.scatter_(1, index, weight > 0)
        assert torch.equal(got, want), top_p
        assert torch.equal(weight[weight > 0], probs.gather(1, index)[weight > 0])
    # a draw only ever lands in the nucleus
    want = ~torch.isinf(TopPLogitsWarper(top_p=0.5)(ids, scores.clone()))
    index, weight = nucleus(probs, 0.5, k=16)
    drawn = index.gather(1, torch.multinomial(weight.float(), 200, replacement=True))
    assert want.gather(1, drawn).all()
