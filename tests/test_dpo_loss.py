"""The DPO-family loss the trainer uses, against ALGORITHMS.md computed by hand.

Hand-built log-probs: chosen -10, rejected -12, reference -11 and -11, beta 0.1, so
z = (-10 + 12) - (-11 + 11) = 2 and beta z = 0.2; response lengths 4 (chosen) and 5 (rejected).
"""

import math

import pytest
import torch

from rlhfx.algos.losses import dpo_loss, preference_accuracy

POLICY = (torch.tensor([-10.0]), torch.tensor([-12.0]))
REF = (torch.tensor([-11.0]), torch.tensor([-11.0]))
LENGTHS = dict(chosen_lengths=torch.tensor([4.0]), rejected_lengths=torch.tensor([5.0]))


def loss(**kwargs):
    return dpo_loss(*POLICY, *REF, beta=0.1, **LENGTHS, **kwargs)


def test_sigmoid_matches_hand_value():
    # -log sigma(0.2) = log(1 + e^-0.2) = 0.598138869...
    assert loss()[0].item() == pytest.approx(0.5981388693, abs=1e-5)


def test_cdpo_label_smoothing_is_applied():
    # -(0.9) log sigma(0.2) - 0.1 log sigma(-0.2) = 0.9 * 0.5981389 + 0.1 * 0.7981389 = 0.6181389
    assert loss(label_smoothing=0.1)[0].item() == pytest.approx(0.6181388693, abs=1e-5)


def test_ipo_uses_length_averaged_log_ratios():
    # z' = (1 / 4) - (-1 / 5) = 0.45; (0.45 - 1 / (2 * 0.1))^2 = (0.45 - 5)^2 = 20.7025
    assert loss(loss_type="ipo")[0].item() == pytest.approx(20.7025, abs=1e-5)


def test_rpo_adds_mean_token_nll_of_chosen():
    # 0.5981389 + 0.5 * (10 / 4)
    assert loss(rpo_alpha=0.5)[0].item() == pytest.approx(1.8481388693, abs=1e-5)


def test_implicit_rewards_and_batch_of_pairs():
    chosen, rejected = torch.tensor([-5.0, -7.0, -3.0]), torch.tensor([-6.0, -6.0, -3.0])
    ref = torch.tensor([-5.5, -6.5, -3.0])
    losses, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref, ref, beta=0.5)
    assert r_chosen.tolist() == pytest.approx([0.25, -0.25, 0.0])
    assert r_rejected.tolist() == pytest.approx([-0.25, 0.25, 0.0])
    expected = [math.log1p(math.exp(-0.5 * z)) for z in (1.0, -1.0, 0.0)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    # one win, one loss, one tie (counted as half)
    assert preference_accuracy(r_chosen, r_rejected).item() == pytest.approx(0.5)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-10.0], requires_grad=True)
    rejected = torch.tensor([-12.0], requires_grad=True)
    dpo_loss(chosen, rejected, *REF, beta=0.1)[0].sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()


def test_openrlhf_ipo_uses_summed_log_ratios():
    # OpenRLHF's --ipo: z = 2 (summed); (2 - 1 / (2 * 0.1))^2 = 9
    assert loss(loss_type="ipo_sum")[0].item() == pytest.approx(9.0, abs=1e-5)


@pytest.mark.parametrize("argv, loss_type", [([], "sigmoid"), (["--loss_type", "ipo"], "ipo"), (["--ipo"], "ipo_sum"),
                                             (["--ipo", "--loss_type", "ipo"], "ipo_sum")])
def test_ipo_spellings(argv, loss_type):
    """--loss_type ipo is TRL's and ms-swift's IPO; --ipo is OpenRLHF's, so its recipes keep their objective."""
    from rlhfx.algos import get_algo
    from rlhfx.arguments import parse_args

    assert get_algo("dpo").build_options(parse_args("rlhf", argv)).loss_kwargs()["loss_type"] == loss_type


@pytest.mark.parametrize("argv, message", [(["--loss_type", "grpo"], "is an online RL loss"),
                                           (["--ipo", "--loss_type", "sigmoid"], "two different losses")])
def test_loss_types_that_do_not_fit_dpo_are_refused(argv, message):
    from rlhfx.algos import get_algo
    from rlhfx.arguments import parse_args
    from rlhfx.errors import RlhfxError

    with pytest.raises(RlhfxError, match=message):
        get_algo("dpo").build_options(parse_args("rlhf", argv))
