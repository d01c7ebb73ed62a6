"""The real default backbones: the documented plain transformers + peft recipe gives
prefstudio's scores on real HH pairs (real tokenizers, SmolLM2's chat template)."""
import pytest
import torch

from harness.hub import resolve
from harness.lora import LoraSettings
from rewardmodel.model import RewardModel

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("spec", ["minilm", "smollm2-135m-instruct"])
def test_plain_recipe_matches_on_real_backbones(spec, hh_file, tmp_path):
    from annotate.trainingdata import from_file
    from test_rm_train import _plain_score

    pairs = [p for p in from_file(hh_file).pairs if len(str(p.prompt)) < 400][:3]
    rm = RewardModel.from_spec(spec, max_length=512, lora=LoraSettings(r=4))
    with torch.no_grad():  # stand-in for training: a non-zero adapter and head
        for _, p in rm.trainable_parameters():
            p.normal_(0, 0.02)
    rm.save(tmp_path / "run")
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ours = RewardModel.load(tmp_path / "run").score(prompts, responses, batch_size=4)
    plain = torch.tensor([_plain_score(rm.kind, resolve(spec), tmp_path / "run", p, r)
                          for p, r in zip(prompts, responses)])
    assert torch.allclose(ours, plain, atol=1e-4), (ours, plain)
