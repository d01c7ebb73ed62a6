"""Policy-optimisation losses: one small function each, the formula and its paper in the docstring.

One return convention, the same as ``rewardmodel/losses.py``: every loss is returned
unreduced — one value per example (a pair, a response) or per token ([B, R], 0 on padding) —
and the trainer reduces it (``masked_mean``, a weighted mean), so weighting and normalisation
live in one visible place.

Shapes: B sequences, R response positions. ``mask`` is 1 on response tokens (up to and
including EOS) and 0 on padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a token that is not trained on (prompt, padding)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token negative log-likelihood:  L_t = −log π(x_{t+1} | x_≤t), for each position t
    whose next token is labelled (the others never reach the LM head). Supervised fine-tuning
    on demonstrations (Ouyang et al. 2022, §3.5 "SFT").

    logits: [N, V] at the N positions that predict a labelled token, targets: [N] → [N]
    """
    return F.cross_entropy(logits.float(), targets, reduction="none")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
             offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """L = −log σ(β·[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))] − Δ)

    Rafailov et al. 2023 ("Direct Preference Optimization"), eq. 7; the offset Δ ≥ 0 asks for
    a larger gap when the label says "significantly better" (DPO with an offset, Amini et al.
    2024). All inputs: [B] → [B].
    """
    logits = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)) - offset
    return -F.logsigmoid(logits)


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, tau: float) -> torch.Tensor:
    """L = (h − 1/(2τ))²,  h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))

    Azar et al. 2023 ("A General Theoretical Paradigm to Understand Learning from Human
    Preferences"), eq. 17. Regresses the log-ratio gap to a finite target instead of pushing it
    to infinity. Inputs are per-token mean log-probs (as TRL does), so the target does not
    depend on response length. [B] → [B].
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return (h - 1.0 / (2.0 * tau)) ** 2


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, per token (Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms", eq. 7):

        ρ_t = π(a_t|s_t) / π_old(a_t|s_t) = exp(log π − log π_old)
        L_t = max(−A_t · ρ_t, −A_t · clip(ρ_t, 1 − ε, 1 + ε))

    The max of the two negated terms is the pessimistic bound: once the ratio has moved more
    than ε in the direction the advantage favours, the token stops contributing a gradient.
    All inputs [B, R] → [B, R].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps))


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_eps: float | None = 0.2) -> torch.Tensor:
    """The critic's squared error with PPO2's value clipping, per token (Schulman et al. 2017;
    the clipping as in OpenAI Baselines' ppo2, discussed by Engstrom et al. 2020,
    "Implementation Matters in Deep Policy Gradients", §3):

        V_clip = V_old + clip(V − V_old, −ε_v, ε_v)
        L_t    = ½ · max((V_t − R_t)², (V_clip,t − R_t)²)      (ε_v = None: ½ (V_t − R_t)²)

    R are the GAE returns (advantage + old value). All inputs [B, R] → [B, R].
    """
    unclipped = (values - returns) ** 2
    if clip_eps is None:
        return 0.5 * unclipped
    v_clip = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.max(unclipped, (v_clip - returns) ** 2)


def reinforce_loss(logprobs: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE with the whole response as one action (Williams 1992; RLOO, Ahmadian et al.
    2024, "Back to Basics", eq. 3-4):

        log π(y_i|x_i) = Σ_t log π(y_t | x, y_<t)
        L_i            = −A_i · log π(y_i | x_i)

    A_i is one number per response (the leave-one-out advantage), so every token of a response
    is pushed in the same direction by the same amount. logprobs, mask: [B, R]; advantages:
    [B] → [B].
    """
    return -advantages * (logprobs * mask).sum(-1)


def preference_pairs(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """prefer[b, i, j] = candidate j is ranked above candidate i (r_i < r_j), both present.
    Equal scores (a tie) make no pair. scores: [B, K], present: [B, K] bool → [B, K, K] bool."""
    both = present[:, :, None] & present[:, None, :]                               # [B, K, K]
    return both & (scores[:, :, None] < scores[:, None, :])


def rrhf_loss(logps: torch.Tensor, scores: torch.Tensor, present: torch.Tensor,
              sft_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RRHF (Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human
    Feedback without tears", eqs. 1-4). For K candidates y_i of one prompt x, ranked by
    scores r_i (a reward model's, or the labels'):

        p_i    = Σ_t log π(y_i,t | x, y_i,<t) / |y_i|         (eq. 1; ``logps``, length-normalised)
        L_rank = Σ_{r_i < r_j} max(0, p_i − p_j)              (eq. 2; ties give no term)
        L_ft   = −p_i',  i' = argmax_i r_i                    (eq. 3 sums over tokens; the mean
                                                               keeps λ apart from length; the
                                                               first best candidate on a tie)
        L      = L_rank + λ · L_ft                            (eq. 4 has λ = 1)

    Only the policy appears: no reference model, no KL term; the SFT term on the best
    candidate is what keeps it close to good text. logps, scores: [B, K]; present: [B, K]
    bool (False on the padding of a prompt with fewer candidates) → (L, L_rank, L_ft), each [B].
    """
    prefer = preference_pairs(scores, present)                                     # [B, K, K]
    gaps = (logps[:, :, None] - logps[:, None, :]).clamp(min=0)                    # [B, K, K]
    rank = (gaps * prefer).sum((1, 2))                                             # [B]
    best = scores.masked_fill(~present, float("-inf")).argmax(-1)                  # [B]
    ft = -logps.gather(-1, best[:, None]).squeeze(-1)                              # [B]
    return rank + sft_weight * ft, rank, ft
