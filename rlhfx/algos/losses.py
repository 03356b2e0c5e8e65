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
    - ipo_sum: (z - 1/(2 beta))^2 with the summed log-ratios z, as OpenRLHF's --ipo computes it.
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
    elif loss_type == "ipo_sum":
        losses = (chosen_logratios - rejected_logratios - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    if rpo_alpha:
        losses = losses + rpo_alpha * (-chosen_logps / chosen_lengths)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def nca_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair NCA loss (Noise Contrastive Alignment, Chen et al. 2024; TRL's DPO loss_type nca_pair):

    -log sigma(r_w) - 1/2 log sigma(-r_w) - 1/2 log sigma(-r_l), r = beta (logp(y) - logref(y)) summed over the
    response. Each answer is scored against the reference on its own, not only by the margin as in DPO, so the
    chosen answer's likelihood is not left to fall. The lengths are unused (every pairwise loss takes them).
    """
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Share of pairs whose chosen reward beats the rejected one; exact ties count one half (chance)."""
    wins = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
    return wins.mean()


def cpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor | None = None,
    *,
    beta: float,
    cpo_alpha: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair CPO loss -log sigma(beta (logp(yw) - logp(yl))) + cpo_alpha NLL(yw); no reference model.

    NLL(yw) = -logp(yw) / |yw|. Implicit rewards: beta * logp (summed). `rejected_lengths` is unused
    (CPO does not length-normalise); it is accepted so every reference-free loss takes the same arguments.
    """
    losses = -F.logsigmoid(beta * (chosen_logps - rejected_logps))
    if cpo_alpha:
        losses = losses + cpo_alpha * (-chosen_logps / chosen_lengths)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
    gamma: float,
    cpo_alpha: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss -log sigma(beta logp(yw)/|yw| - beta logp(yl)/|yl| - gamma) + cpo_alpha NLL(yw).

    No reference model. Implicit rewards: beta * logp / |y| (length-averaged), which the margin gamma is
    measured against.
    """
    chosen_avg = chosen_logps / chosen_lengths
    rejected_avg = rejected_logps / rejected_lengths
    losses = -F.logsigmoid(beta * chosen_avg - beta * rejected_avg - gamma)
    if cpo_alpha:
        losses = losses + cpo_alpha * (-chosen_avg)
    return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()


_LN2 = 0.6931471805599453


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation on either side of -ln 2 and with finite gradients.

    x is clamped to at most -1e-7 first, so a response the model is certain of (average log-prob 0, p = 1,
    infinite odds) gives a large finite log-odds instead of inf. Each branch is evaluated only on inputs
    where it is well defined, so the branch torch.where discards cannot poison the gradient with NaN.
    """
    x = x.clamp(max=-1e-7)
    far = x < -_LN2
    far_value = torch.log1p(-torch.exp(torch.where(far, x, torch.full_like(x, -1.0))))
    near_value = torch.log(-torch.expm1(torch.where(far, torch.full_like(x, -0.5), x)))
    return torch.where(far, far_value, near_value)


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair ORPO loss NLL(yw) - lambda log sigma(log odds(yw) - log odds(yl)); lambda is `beta`.

    p(y) = exp(logp(y) / |y|) (the per-token geometric mean probability), odds = p / (1 - p), so
    log odds = logp/|y| - log(1 - exp(logp/|y|)). NLL(yw) = -logp(yw) / |yw|, response tokens only.
    Implicit rewards: beta * logp / |y|, as TRL's ORPOTrainer reports them.
    """
    chosen_avg = chosen_logps / chosen_lengths
    rejected_avg = rejected_logps / rejected_lengths
    log_odds = (chosen_avg - log1mexp(chosen_avg)) - (rejected_avg - log1mexp(rejected_avg))
    losses = -chosen_avg - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    kl_logps: torch.Tensor,
    ref_kl_logps: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example KTO loss, the implicit rewards beta * r, and the reference point z0.

    r = logp(y) - logref(y). z0 = max(0, mean(kl_logps - ref_kl_logps)), detached: the KL estimate from
    mismatched pairs (x_i, y_(i+1)) of the batch. Desirable (label True): w_d (1 - sigma(beta (r - z0)));
    undesirable: w_u (1 - sigma(beta (z0 - r))). The training loss is the mean over the batch.
    """
    r = logps - ref_logps
    z0 = (kl_logps - ref_kl_logps).mean().clamp(min=0).detach()
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    losses = torch.where(labels.bool(), desirable, undesirable)
    return losses, beta * r.detach(), z0


def rm_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair Bradley-Terry reward-model loss -log sigma(r(x,yw) - r(x,yl) - margin); margin 0 when None."""
    diff = chosen_rewards.float() - rejected_rewards.float()
    if margin is not None:
        diff = diff - margin.to(diff)
    return -F.logsigmoid(diff)


def prm_loss(step_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step process-reward loss and each step's predicted probability of being good.

    step_logits: [n, 2] logits of the (good, bad) reward tokens read at the placeholder positions,
    or [n] logits of a binary head (equivalent to the pair (s, 0)). labels: [n] targets p in [0, 1]
    (hard labels are 0/1). Loss = soft cross-entropy -(p log q_good + (1 - p) log q_bad), with
    q = softmax over the two logits; for hard labels this is the ordinary cross-entropy.
    """
    if step_logits.dim() == 1:
        step_logits = torch.stack([step_logits, torch.zeros_like(step_logits)], dim=-1)
    logq = F.log_softmax(step_logits.float(), dim=-1)
    p = labels.to(logq)
    losses = -(p * logq[:, 0] + (1 - p) * logq[:, 1])
    return losses, logq[:, 0].detach().exp()


def step_accuracy(good_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of steps whose predicted label (P(good) > 0.5) matches the label rounded at 0.5."""
    return ((good_probs > 0.5) == (labels > 0.5)).float().mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, kd_coef: float,
            ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knowledge distillation (OpenRLHF's MiniLLM-style KD): (1 - kd_coef) NLL + kd_coef (-sum_v p_teacher(v) log p_student(v)).

    Logits are [batch, T, V] aligned with labels [batch, T] (position t predicts labels[t]); both terms are
    token means over the positions whose label is not `ignore_index` (the response tokens). Vocabulary entries
    where the student's logit is -inf add nothing (0 * -inf would be NaN). Returns (loss, nll, distill).
    """
    mask = (labels != ignore_index).float()
    tokens = mask.sum().clamp(min=1)
    logp = F.log_softmax(student_logits.float(), dim=-1)
    nll = -(logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum() / tokens
    cross = (F.softmax(teacher_logits.float(), dim=-1) * logp).masked_fill(torch.isinf(student_logits), 0.0)
    distill = -(cross.sum(dim=-1) * mask).sum() / tokens
    return (1 - kd_coef) * nll + kd_coef * distill, nll, distill
