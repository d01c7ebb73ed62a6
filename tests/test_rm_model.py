"""RewardModel input building: left truncation, shared-prompt packing equals separate sequences."""
import pytest
import torch

from rewardmodel import batches as B
from harness.lora import LoraSettings
from rewardmodel.encoding import fit_lengths
from rewardmodel.model import RewardModel
from rm_synthetic import marker_data


def test_fit_lengths_keeps_the_response_and_cuts_the_prompt_from_the_left():
    assert fit_lengths(10, 5, 64) == (10, 5)          # fits: nothing cut
    assert fit_lengths(300, 50, 256) == (206, 50)     # long prompt: its oldest tokens go
    assert fit_lengths(10, 400, 256) == (10, 246)     # long response: cut from its end
    assert fit_lengths(300, 400, 256) == (64, 192)    # both: a quarter of the budget stays prompt


@pytest.mark.parametrize("backbone", ["tiny_lm", "tiny_bert"])
def test_truncation_drops_the_oldest_turns(backbone, request):
    rm = RewardModel.from_spec(str(request.getfixturevalue(backbone)), max_length=24)
    prompt = [{"role": "user", "content": "one two three four five six seven eight nine"},
              {"role": "assistant", "content": "ok sure"},
              {"role": "user", "content": "tell me a story about the cat please"}]
    enc = rm.encode([prompt], ["the cat is happy zebra"])[0]
    text = rm.tokenizer.decode(enc.ids)
    assert len(enc.ids) == 24
    assert "the cat is happy zebra" in text and "please" in text and "one two" not in text


def test_shared_prompt_packing_gives_the_rewards_of_separate_sequences(tiny_lm):
    rm = RewardModel.from_spec(str(tiny_lm), max_length=40, lora=LoraSettings(r=4))
    with torch.no_grad():  # a non-trivial head and adapter, so a wrong mask would show
        for _, p in rm.trainable_parameters():
            p.normal_(0, 0.3)
    data = marker_data(6, seed=3, rankings=2)
    long_prompt = [{"role": "user", "content": " ".join(["tell me about the sun"] * 8)}]
    data.pairs[0].prompt = long_prompt  # truncated differently for its two responses
    data.pairs[0].rejected = " ".join(["the moon"] * 6)
    comparisons = B.comparisons_from(data)
    B.encode_all(rm, comparisons)
    rm.eval()
    with torch.no_grad():
        packed = rm(**B.collate(rm, comparisons, share_prompt=True).inputs)
        separate = rm(**B.collate(rm, comparisons, share_prompt=False).inputs)
    assert packed.shape == separate.shape == (2 * 6 + 4 * 2,)
    assert torch.allclose(packed, separate, atol=1e-5), (packed - separate).abs().max()
    assert comparisons[0].tokens[0].ids[:comparisons[0].tokens[0].prompt_len] != \
        comparisons[0].tokens[1].ids[:comparisons[0].tokens[1].prompt_len]
    # packing saves tokens: the prompt is there once per comparison, not once per response
    packed_ids = B.collate(rm, comparisons, share_prompt=True).inputs["input_ids"]
    assert packed_ids.shape[0] == len(comparisons) + 1  # one row each, two for the cut pair


def test_score_groups_responses_by_prompt_without_changing_rewards(tiny_lm):
    rm = RewardModel.from_spec(str(tiny_lm), max_length=40, lora=LoraSettings(r=4))
    with torch.no_grad():
        for _, p in rm.trainable_parameters():
            p.normal_(0, 0.3)
    data = marker_data(5, seed=4)
    prompts = [p.prompt for p in data.pairs for _ in range(3)]          # 3 samples per prompt
    responses = [r for p in data.pairs for r in (p.chosen, p.rejected, "ok sure")]
    grouped = rm.score(prompts, responses, batch_size=4)
    one_by_one = torch.cat([rm.score([p], [r]) for p, r in zip(prompts, responses)])
    assert torch.allclose(grouped, one_by_one, atol=1e-5)


def test_encoder_last_layer_at_cls_only_gives_the_full_layers_rewards_and_gradients(tiny_bert):
    """rewardmodel/last_layer.py: padded rows of different lengths, an adapter on every linear
    layer; the [CLS]-only last layer must change neither the rewards nor any gradient."""
    rm = RewardModel.from_spec(str(tiny_bert), max_length=40,
                               lora=LoraSettings(r=4, target_modules="all-linear"))
    assert rm._cls_layer[0] is not None
    torch.manual_seed(0)   # the same weights whichever tests ran before in this process
    with torch.no_grad():
        for _, p in rm.trainable_parameters():
            p.normal_(0, 0.3)
    comparisons = B.comparisons_from(marker_data(4, seed=5))
    B.encode_all(rm, comparisons)
    inputs = B.collate(rm, comparisons).inputs
    assert (inputs["attention_mask"] == 0).any()          # some padding, so the mask matters

    def rewards_and_grads():
        rm.zero_grad()
        rewards = rm(**inputs)
        (rewards * torch.linspace(-1, 1, len(rewards))).sum().backward()
        return rewards.detach(), {n: p.grad.clone() for n, p in rm.trainable_parameters()}

    fast, fast_grads = rewards_and_grads()
    rm._cls_layer = (None,)                               # the full last layer
    full, full_grads = rewards_and_grads()
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5)
    for name, grad in full_grads.items():   # equal up to float rounding, relative to the tensor
        assert (fast_grads[name] - grad).norm() <= 1e-3 * grad.norm(), name
    assert any(g.abs().sum() > 0 for n, g in full_grads.items() if "layer.1." in n)
