"""The actor and the critic on ONE base model.

Seed 000's design: the critic is the actor's last hidden layer plus a new linear layer, every
other weight shared. Here the actor is the LoRA-adapted base, the critic is a linear value head
on the same hidden states, and the reference policy is the base with the adapter switched off
(``policy.lm.reference``). So PPO's "four models" are one base model, one adapter and one
``hidden_size × 1`` head. With ``critic_adapter`` the critic gets its own LoRA adapter on the
same base instead (the actor's gradients and the critic's then stop interfering, at the price
of a second backbone pass per step).

Only the response positions go through the LM head: logits for the prompt would be the
largest tensor of the step ([B, P, vocab]) and nobody needs them.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .lm import logprobs_from_logits, reference

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

    # --- backbone ------------------------------------------------------------------------------

    def _lm(self):
        """The transformers model (LoRA layers injected in place when the policy is a PeftModel)."""
        return self.policy.get_base_model() if hasattr(self.policy, "get_base_model") else self.policy

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states (after the final norm, what the LM head reads): [B, T, H]."""
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)   # left padding
        decoder = self._lm().get_decoder()
        return decoder(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=False).last_hidden_state

    @contextmanager
    def _adapter(self, name: str):
        if not self.critic_adapter:
            yield
            return
        self.policy.base_model.set_adapter(name)
        for p in self._trainable:
            p.requires_grad_(True)
        try:
            yield
        finally:
            self.policy.base_model.set_adapter("default")
            for p in self._trainable:
                p.requires_grad_(True)

    def _response_logprobs(self, hidden: torch.Tensor, input_ids: torch.Tensor,
                           prompt_len: int) -> torch.Tensor:
        # the state at position t predicts token t+1: response token j is read at P-1+j
        h = hidden[:, prompt_len - 1:-1]                                          # [B, R, H]
        logits = self._lm().get_output_embeddings()(h)                           # [B, R, V]
        if self.temperature != 1.0:  # log-probs of the distribution the rollout sampled from
            logits = logits / self.temperature
        return logprobs_from_logits(logits, input_ids[:, prompt_len:])            # [B, R]

    # --- what the trainers call --------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prompt_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, attention_mask: [B, P+R] → logprobs [B, R], values [B, R] (or None).

        values[:, j] is the critic's estimate of the return from response token j on,
        read from the same state that predicts token j.
        """
        hidden = self._hidden(input_ids, attention_mask)                          # [B, T, H]
        logprobs = self._response_logprobs(hidden, input_ids, prompt_len)
        if self.value_head is None:
            return logprobs, None
        if self.critic_adapter:
            with self._adapter(CRITIC_ADAPTER):
                hidden = self._hidden(input_ids, attention_mask)
        values = self.value_head(hidden[:, prompt_len - 1:-1]).squeeze(-1)       # [B, R]
        return logprobs, values

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_len: int) -> torch.Tensor:
        """The same log-probs under the reference policy (adapters off): [B, R]."""
        with reference(self.policy):
            hidden = self._hidden(input_ids, attention_mask)
            return self._response_logprobs(hidden, input_ids, prompt_len)

    def value_head_state(self) -> dict:
        return {} if self.value_head is None else self.value_head.state_dict()
