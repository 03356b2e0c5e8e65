"""Pure loss functions, exactly as ../shared/docs/ALGORITHMS.md writes them.

They take per-sequence quantities (summed response log-probs, token counts) so they can be tested
on hand-built tensors; the trainers call these same functions on the real model outputs.
"""

import torch
import torch.nn.functional as F


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family loss and the implicit rewards beta * (logp - logref) of chosen and rejected.

    - sigmoid (label_smoothing e, cDPO): -(1-e) log sigma(beta z) - e log sigma(-beta z), with
      z = (logp(yw) - logp(yl)) - (logref(yw) - logref(yl)). e = 0 is plain DPO.
    - ipo: (z' - 1/(2 beta))^2, where z' uses log-ratios averaged over response tokens (the IPO
      authors' normalisation, as TRL does); it needs chosen_lengths and rejected_lengths.
    - rpo_alpha a > 0 adds a * NLL(yw), the mean token negative log-likelihood of the chosen response
      (-logp(yw) / |yw|); it needs chosen_lengths.
    """
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        z = chosen_logratios - rejected_logratios
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * z) - label_smoothing * F.logsigmoid(-beta * z)
    elif loss_type == "ipo":
        z = chosen_logratios / chosen_lengths - rejected_logratios / rejected_lengths
        losses = (z - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    if rpo_alpha:
        losses = losses + rpo_alpha * (-chosen_logps / chosen_lengths)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Share of pairs whose chosen reward beats the rejected one; exact ties count one half (chance)."""
    wins = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
    return wins.mean()
