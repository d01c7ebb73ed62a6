"""harness/fused_lora.py: the fused LoRA linear computes what peft's LoRA layer computes (output,
the input's gradient, the adapter's gradients), and hands every case it does not cover back."""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from harness import fused_lora


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 16)                  # with a bias
        self.down = nn.Linear(16, 4, bias=False)    # without

    def forward(self, x):
        return self.down(torch.tanh(self.up(x)))


def lora_net(dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(Net(), LoraConfig(r=4, lora_alpha=12, lora_dropout=dropout,
                                             target_modules=["up", "down"]))
    with torch.no_grad():   # peft starts B at zero: make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return model


def outputs_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y * torch.arange(1.0, 5.0)).sum().backward()   # a non-uniform upstream gradient
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return y.detach(), x.grad.clone(), grads


def test_fused_layer_matches_peft_in_output_and_every_gradient():
    plain = lora_net()
    fused = copy.deepcopy(plain)
    assert fused_lora.install(fused) == 2
    x = torch.randn(3, 5, 8)                       # [batch, tokens, in]: a 3-D input
    y0, gx0, g0 = outputs_and_grads(plain, x)
    y1, gx1, g1 = outputs_and_grads(fused, x)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
    assert set(g1) == set(g0) and len(g0) == 4     # A and B of both layers, nothing frozen
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5)


def test_cases_it_does_not_cover_fall_back_to_peft():
    plain = lora_net(dropout=0.5)                  # dropout: peft's own forward, with its mask
    fused = copy.deepcopy(plain)
    assert fused_lora.install(fused) == 2
    x = torch.randn(2, 8)
    for seed in (1, 2):
        torch.manual_seed(seed)
        expected = plain(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(fused(x), expected, rtol=0, atol=0)   # the same masks
    with fused.disable_adapter(), plain.disable_adapter():              # adapters off: the base
        torch.testing.assert_close(fused(x), plain(x), rtol=0, atol=0)


def test_the_switch_leaves_peft_alone(monkeypatch):
    monkeypatch.setenv("PREFSTUDIO_FUSED_LORA", "0")
    assert fused_lora.install(lora_net()) == 0
