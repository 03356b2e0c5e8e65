"""CHORD (arXiv 2508.11408; docs/algorithms/chord.md): an SFT loss on expert data mixed into the policy loss,
(1 - mu) x policy loss + mu x SFT loss, mu on a warmup + cosine schedule over the optimizer steps, the SFT loss
optionally weighted per token by phi = p (1 - p). As ms-swift's GRPO trainer: every micro step of the update draws
its own expert micro batch (each rank its own slice of a global batch, cycling with --seed), and with mu = 0 none.
"""

import math

import torch

from rlhfx.training.sft_batches import CyclingBatches, sft_collator

SALT = 2  # the expert set's shuffle stream, apart from other data sets cycling with the same --seed


def mu_schedule(step: int, warmup_steps: int, decay_steps: int, peak: float, valley: float) -> float:
    """mu after `step` optimizer steps: linear from 0 to `peak` over the warmup, then a half cosine down to `valley`
    over the decay, then `valley`."""
    if step < warmup_steps:
        return step / warmup_steps * peak
    if step >= warmup_steps + decay_steps:
        return valley
    return (peak - valley) * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / decay_steps)) + valley


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, phi: bool) -> torch.Tensor:
    """The NLL of the labelled tokens (labels -100 elsewhere; logits[:, t] predicts labels[:, t]), summed and divided
    by their count. phi: each token's NLL weighed by p (1 - p), p = exp(-NLL) its probability, held constant."""
    mask = labels != -100
    nll = -torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    if phi:
        p = torch.exp(-nll.detach())
        nll = nll * p * (1 - p)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


class Chord:
    """The expert batches and the schedule of mu, from the --chord_* options."""

    def __init__(self, config, rows, pad_id: int, seed: int, ranks):
        self.config = config
        self.batches = CyclingBatches(rows, config.chord_sft_per_device_train_batch_size, sft_collator(pad_id), seed,
                                      SALT, ranks.rank, ranks.world)

    def mu(self, step: int) -> float:
        c = self.config
        return mu_schedule(step, c.chord_mu_warmup_steps, c.chord_mu_decay_steps, c.chord_mu_peak, c.chord_mu_valley)

    def loss(self, policy, device) -> torch.Tensor:
        """The SFT loss of the next expert batch through `policy`, the prepared policy (rlhfx.algos.rl.update.Role,
        so DDP / DeepSpeed see the forward): its logits from position 0 predict tokens 1..L-1."""
        batch = next(self.batches)
        ids, attention, labels = (batch[key].to(device) for key in ("input_ids", "attention_mask", "labels"))
        logits = policy(ids, attention, 1, ids.shape[1] - 1)
        return sft_loss(logits, labels[:, 1:], self.config.chord_enable_phi_function)
