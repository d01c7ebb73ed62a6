"""SFT: labels cover exactly the assistant turns, packing changes nothing, the loss goes down."""
import json

import pytest
import torch

from annotate.runlog import read_metrics, read_run
from policy.generate import SamplingParams, sample
from harness.lora import LoraSettings
from policy.lm import load_policy, load_tokenizer
from policy.sft import (IGNORE, SFTConfig, build_examples, collate, read_chats, sft_loss,
                        tokenize_chat, train_sft)

CHAT = [{"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi how are you"},
        {"role": "user", "content": "tell me a story"},
        {"role": "assistant", "content": "ok here is a story"}]


def test_labels_are_exactly_the_assistant_turns(tiny_lm):
    tok = load_tokenizer(str(tiny_lm))
    ex = tokenize_chat(tok, CHAT, max_len=512)
    tokens = tok.convert_ids_to_tokens(ex["input_ids"])
    # hand-written: the ChatML rendering of CHAT, one word-level token per word
    assert tokens == ["<|im_start|>", "user", "hello", "<|im_end|>",
                      "<|im_start|>", "assistant", "hi", "how", "are", "you", "<|im_end|>",
                      "<|im_start|>", "user", "tell", "me", "a", "story", "<|im_end|>",
                      "<|im_start|>", "assistant", "ok", "here", "is", "a", "story", "<|im_end|>"]
    labelled = [i for i, label in enumerate(ex["labels"]) if label != IGNORE]
    assert labelled == [6, 7, 8, 9, 10, 20, 21, 22, 23, 24, 25]
    assert all(ex["labels"][i] == ex["input_ids"][i] for i in labelled)
    # only the reply to the last turn, as rejection sampling uses it
    last = tokenize_chat(tok, CHAT, max_len=512, last_turn_only=True)
    assert [i for i, label in enumerate(last["labels"]) if label != IGNORE] == [20, 21, 22, 23, 24, 25]
    # cut before the second reply: the first reply alone is left; cut before any: nothing
    assert [i for i, l in enumerate(tokenize_chat(tok, CHAT, 15)["labels"]) if l != IGNORE] == [6, 7, 8, 9, 10]
    assert tokenize_chat(tok, CHAT, 6) is None


@pytest.mark.slow
def test_labels_on_the_default_model_template():
    """SmolLM2's template adds a system turn; its text and the role headers stay unlabelled."""
    tok = load_tokenizer("smollm2-135m-instruct")
    ex = tokenize_chat(tok, CHAT, max_len=512)
    runs, current = [], []
    for token_id, label in zip(ex["input_ids"], ex["labels"]):
        if label != IGNORE:
            current.append(token_id)
        elif current:
            runs.append(tok.decode(current)); current = []
    runs += [tok.decode(current)] if current else []
    assert runs == ["hi how are you<|im_end|>", "ok here is a story<|im_end|>"]


def test_packing_gives_the_same_loss_as_padding(tiny_lm):
    model, tok = load_policy(str(tiny_lm))
    chats = [CHAT, CHAT[:2], [{"role": "user", "content": "what is python"},
                             {"role": "assistant", "content": "python is a good list of code"}]]
    plain = build_examples(tok, chats, max_len=64)
    packed = build_examples(tok, chats, max_len=64, packing=True)
    assert len(packed) == 1 and len(packed[0]["input_ids"]) == sum(len(e["input_ids"]) for e in plain)
    with torch.no_grad():
        loss_plain, n_plain = sft_loss(model, collate(plain, tok.pad_token_id))
        loss_packed, n_packed = sft_loss(model, collate(packed, tok.pad_token_id))
    assert n_plain == n_packed == 11 + 5 + 8
    # block-diagonal attention: a packed chat sees nothing of its neighbours
    assert loss_packed.item() == pytest.approx(loss_plain.item(), rel=1e-5)


def test_sft_loss_is_the_mean_nll_of_the_labelled_tokens(tiny_lm):
    """The LM head runs on the labelled positions only; the loss is still the mean next-token
    NLL over them, as computed from the full [B, T, V] logits."""
    model, tok = load_policy(str(tiny_lm))
    chats = [CHAT, CHAT[:2]]
    batch = collate(build_examples(tok, chats, max_len=64), tok.pad_token_id)
    with torch.no_grad():
        loss, n = sft_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    full = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(),
                                             ignore_index=IGNORE, reduction="sum")
    assert n == int((targets != IGNORE).sum()) == 11 + 5
    assert loss.item() == pytest.approx(full.item() / n, rel=1e-5)


def test_sft_loss_goes_down_and_the_policy_learns_the_replies(tiny_policy, tmp_path):
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": "zebra quokka zebra"}]
             for q in ["hello", "tell me a story", "write a poem", "what is the sun"]]
    chats.append(CHAT)
    config = SFTConfig(model=str(tiny_policy), lr=1e-2, batch_size=4, max_steps=40, save_every=0,
                       packing=True, lora=LoraSettings(r=8, alpha=16))
    out = train_sft(config, chats, tmp_path / "sft")
    losses = [m["value"] for m in read_metrics(out) if m["name"] == "loss"]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    run = read_run(out)
    assert run["status"] == "done" and run["kind"] == "sft" and run["config"]["packing"] is True
    model, tok = load_policy(str(out))
    roll = sample(model, tok, [[{"role": "user", "content": "write a poem"}],
                               [{"role": "user", "content": "hello"}]],
                  SamplingParams(max_new_tokens=6, temperature=0))
    assert roll.texts[0].startswith("zebra quokka zebra")
    # "hello" has two replies in the data (CHAT's and a zebra chat's): either, learned whole
    assert roll.texts[1].startswith(("zebra quokka zebra", "hi how are you")), roll.texts


def test_read_chats_names_the_line_and_field(tmp_path):
    good = tmp_path / "chats.jsonl"
    good.write_text(json.dumps({"messages": CHAT}) + "\n\n")
    assert read_chats(good) == [CHAT]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": CHAT}) + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: messages: no assistant turn"):
        read_chats(bad)
    bad.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: messages\[0\].role"):
        read_chats(bad)
