"""The actor and the critic on ONE base model.

Seed 000's design: the critic is the actor's last hidden layer plus a new linear layer, every
other weight shared. Here the actor is the LoRA-adapted base, the critic is a linear value head
on the same hidden states, and the reference policy is the base with the adapter switched off
(``policy.lm.reference``). So PPO's "four models" are one base model, one adapter and one
``hidden_size × 1`` head. With ``critic_adapter`` the critic gets its own LoRA adapter on the
same base instead (the actor's gradients and the critic's then stop interfering, at the price
of a second backbone pass per step).

Only the response positions go through the LM head (``lm.response_logprobs``): logits for the
prompt would be the largest tensor of the step ([B, P, vocab]) and nobody needs them.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .lm import reference, response_logprobs

CRITIC_ADAPTER = "critic"


class ActorCritic(nn.Module):
    """``forward`` → per-token log-probs of the response under the policy, and the critic's values.

    policy: a PeftModel (LoRA adapter "default"); value_head: add a critic (PPO) or not (RLOO).
    """

    def __init__(self, policy, value_head: bool = True, critic_adapter: bool = False,
                 temperature: float = 1.0):
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        self.value_head = None
        self.critic_adapter = critic_adapter and value_head
        if value_head:
            self.value_head = nn.Linear(policy.config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)   # V starts at 0: no made-up value estimates
            nn.init.zeros_(self.value_head.bias)
        if self.critic_adapter and CRITIC_ADAPTER not in policy.peft_config:
            policy.add_adapter(CRITIC_ADAPTER, policy.peft_config["default"])
            for name, p in policy.named_parameters():
                if f".{CRITIC_ADAPTER}." in name:
                    p.requires_grad_(True)
        # switching adapters makes PEFT freeze the inactive one; remember what trains
        self._trainable = [p for p in self.parameters() if p.requires_grad]

    # --- adapters ------------------------------------------------------------------------------

    @contextmanager
    def _adapter(self, name: str):
        """Run with the critic's adapter active (PEFT freezes the inactive adapter on a switch:
        restore what trains)."""
        self.policy.base_model.set_adapter(name)
        for p in self._trainable:
            p.requires_grad_(True)
        try:
            yield
        finally:
            self.policy.base_model.set_adapter("default")
            for p in self._trainable:
                p.requires_grad_(True)

    # --- what the trainers call --------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prompt_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, attention_mask: [B, P+R] → logprobs [B, R], values [B, R] (or None).

        values[:, j] is the critic's estimate of the return from response token j on, read
        from the same hidden state that predicts token j (one backbone pass for both).
        """
        shared = self.value_head is not None and not self.critic_adapter
        out = response_logprobs(self.policy, input_ids, attention_mask, prompt_len,
                                self.temperature, hidden=shared)
        if self.value_head is None:
            return out, None
        if shared:
            logprobs, hidden = out                                                # [B, R, H]
        else:
            logprobs = out
            with self._adapter(CRITIC_ADAPTER):
                _, hidden = response_logprobs(self.policy, input_ids, attention_mask,
                                              prompt_len, hidden=True)
        return logprobs, self.value_head(hidden).squeeze(-1)                      # [B, R]

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_len: int) -> torch.Tensor:
        """The same log-probs under the reference policy (adapters off): [B, R]."""
        with reference(self.policy):
            return response_logprobs(self.policy, input_ids, attention_mask, prompt_len,
                                     self.temperature)

    def value_head_state(self) -> dict:
        return {} if self.value_head is None else self.value_head.state_dict()
