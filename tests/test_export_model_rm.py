"""`prefstudio export model` for reward models and ensembles: standard sequence-classification
folders whose scores, fed as their README says, equal prefstudio's; bad inputs refused."""
import json

import pytest
import torch

from cli import main
from rewardmodel.score import load_scorer
from rewardmodel.train import RMConfig, train
from rm_synthetic import marker_data

PROMPTS = [[{"role": "user", "content": "tell me a story about the moon"}],
           [{"role": "system", "content": "be short"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"}, {"role": "user", "content": "write a poem"}],
           [{"role": "user", "content": "what is the sun"}]] * 2
RESPONSES = ["ok here is a zebra story", "no", "the sun is a star , sorry", "zebra zebra quokka",
             "i love tea and coffee because they are good", "hello"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rm_runs(tiny_lm, tiny_bert, tmp_path_factory):
    """A decoder and an encoder reward model, trained a few steps (LoRA and head off zero)."""
    root = tmp_path_factory.mktemp("rms")
    runs = {}
    for kind, base in (("decoder", tiny_lm), ("encoder", tiny_bert)):
        train(RMConfig(out=str(root / kind), base=str(base), max_length=64, lora_r=8, lr=3e-2,
                       batch_size=8, max_steps=12, eval_fraction=0), marker_data(96, seed=4))
        runs[kind] = root / kind
    return runs


def plain_scores(folder, prompts, responses) -> torch.Tensor:
    """Scores the way the exported README tells a transformers user to compute them."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    decoder = not model.config.model_type.startswith("bert")
    out = []
    for prompt, response in zip(prompts, responses):
        if decoder:
            text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                           tokenize=False)
            inputs = tok(text, add_special_tokens=False, return_tensors="pt")
        else:
            context = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
            inputs = tok(context, response, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**inputs).logits[0, 0].item())
    return torch.tensor(out)


@pytest.mark.parametrize("kind,cls", [("decoder", "LlamaForSequenceClassification"),
                                      ("encoder", "BertForSequenceClassification")])
def test_exported_reward_model_scores_equal_prefstudios(rm_runs, kind, cls, tmp_path):
    out = tmp_path / "rm"
    assert main(["export", "model", str(rm_runs[kind]), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls] and len(config["id2label"]) == 1 and "auto_map" not in config
    assert not (out / "adapter_config.json").exists()
    ours = load_scorer(rm_runs[kind]).score(PROMPTS, RESPONSES, batch_size=4)
    exported = plain_scores(out, PROMPTS, RESPONSES)
    assert torch.allclose(ours, exported, atol=1e-4), (ours, exported)
    assert ours.std() > 1e-2  # a trained head that tells the texts apart, not a constant
    readme = (out / "README.md").read_text()
    assert ("apply_chat_template" if kind == "decoder" else "role']}: {m['content']}") in readme


def test_a_head_trained_on_the_policys_backbone_exports_standalone(tiny_lm, tmp_path):
    """rm.json says shared_backbone: a causal-LM adapter plus head.pt, merged into one model."""
    from policy_helpers import shared_base_rm
    run = shared_base_rm(tiny_lm, tmp_path / "shared")
    out = tmp_path / "rm"
    assert main(["export", "model", str(run), "--out", str(out)]) == 0
    ours = load_scorer(run).score(PROMPTS, RESPONSES)
    assert torch.allclose(ours, plain_scores(out, PROMPTS, RESPONSES), atol=1e-4)
    assert ours.std() > 1e-2


def test_decoder_export_scores_right_padded_batches_like_single_texts(rm_runs, tmp_path):
    """TRL and OpenRLHF score padded batches: the pad id in config.json must make the score
    head read each row's last real token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    out = tmp_path / "rm"
    assert main(["export", "model", str(rm_runs["decoder"]), "--out", str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    texts = [tok.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
             for p, r in zip(PROMPTS, RESPONSES)]
    tok.padding_side = "right"
    with torch.no_grad():
        batched = model(**tok(texts, add_special_tokens=False, padding=True,
                              return_tensors="pt")).logits[:, 0]
    assert torch.allclose(batched, plain_scores(out, PROMPTS, RESPONSES), atol=1e-4)


def test_ensemble_exports_its_members_and_rule(rm_runs, tmp_path):
    config = tmp_path / "ensemble.json"
    ours_enc = load_scorer(rm_runs["encoder"]).score(PROMPTS, RESPONSES)
    middle = ours_enc.sort().values[len(RESPONSES) // 2 - 1:len(RESPONSES) // 2 + 1]
    threshold = float(middle.mean())   # between two scores: no response sits on the threshold
    config.write_text(json.dumps({
        "models": [{"path": str(rm_runs["decoder"]), "weight": 1.0},
                   {"path": str(rm_runs["encoder"]), "weight": 0.5}],
        "normalize": True,
        "safety": {"path": str(rm_runs["encoder"]), "threshold": threshold, "tags": ["safety"]}}))
    out = tmp_path / "exported"
    assert main(["export", "model", str(config), "--out", str(out)]) == 0
    rule = json.loads((out / "ensemble.json").read_text())
    assert [m["path"] for m in rule["members"]] == ["member-0", "member-1"]
    assert rule["safety"]["path"] == "member-1"   # the same model is exported once
    assert not (out / "safety").exists()

    tags = [["safety"], [], [], [], [], []]
    total = torch.zeros(len(RESPONSES))
    for m in rule["members"]:
        assert m["std"] != 1.0 and m["mean"] != 0.0   # normalisation travelled
        total += m["weight"] * (plain_scores(out / m["path"], PROMPTS, RESPONSES) - m["mean"]) / m["std"]
    safety = plain_scores(out / rule["safety"]["path"], PROMPTS, RESPONSES)
    gated = torch.tensor([bool(set(t) & set(rule["safety"]["tags"])) for t in tags])
    combined = torch.where(gated | (safety < rule["safety"]["threshold"]), safety, total)
    ours = load_scorer(config).score(PROMPTS, RESPONSES, tags=tags)
    assert torch.allclose(ours, combined, atol=1e-4), (ours, combined)
    assert "weight * (member reward - mean) / std" in (out / "README.md").read_text()


def test_bad_inputs_exit_2_with_one_line(rm_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the default workspace (./workspace) has no such run
    judge_run = tmp_path / "judge-run"
    judge_run.mkdir()
    (judge_run / "run.json").write_text(json.dumps({"id": "judge-1", "kind": "judge"}))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    bad_ensemble = tmp_path / "bad.json"
    bad_ensemble.write_text(json.dumps({"models": [{"weight": 1}]}))
    cases = [
        (["sft-20990101-000000-abcdef", "--out", str(tmp_path / "a")], "no such run"),
        ([str(judge_run), "--out", str(tmp_path / "b")], "a judge run holds no model"),
        ([str(rm_runs["decoder"]), "--out", str(full)], "not an empty folder"),
        ([str(rm_runs["decoder"]), "--out", str(tmp_path / "c"), "--adapter"], "policy runs"),
        ([str(bad_ensemble), "--out", str(tmp_path / "d")], "path: missing"),
    ]
    for argv, why in cases:
        assert main(["export", "model", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and err.startswith("prefstudio export:"), err
    assert main(["export", "--out", str(tmp_path / "e"), "model"]) == 2
    assert "name the run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "full", "judge-run"]
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
