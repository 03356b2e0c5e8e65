"""CHORD's pieces (rlhfx/algos/rl/chord.py) against hand-computed values: the mu schedule (ms-swift's linear warmup to
the peak, then a half cosine from the peak to the valley, then the valley) and the phi-weighted SFT loss and its
gradient; and a CLI run on two processes that learns the expert data. The loss inside the update stage:
tests/test_rl_flag_wiring.py; two processes updating like one: tests/test_rl_distributed.py."""

import json
import math

import shutil

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)

from rlhfx.algos.rl.chord import mu_schedule


@pytest.mark.parametrize("step, mu", [
    (0, 0.0), (1, 0.225), (2, 0.45),  # warmup over 4 steps to 0.9: 0.9 * step / 4
    (4, 0.9),  # the peak: the cosine starts at 1
    (9, 0.5),  # halfway through the 10 decay steps: 0.1 + 0.8 * (1 + cos(pi / 2)) / 2
    (6, 0.1 + 0.8 * (1 + math.cos(math.pi / 5)) / 2),
    (14, 0.1), (100, 0.1),  # the valley, kept
])
def test_mu_warms_up_then_decays_along_a_half_cosine(step, mu):
    assert mu_schedule(step, 4, 10, 0.9, 0.1) == pytest.approx(mu, abs=1e-12)


def test_ms_swift_example_schedule_and_a_constant_mu():
    """examples/train/grpo/internal/chord.sh: no warmup, 200 decay steps, 0.9 -> 0.05."""
    assert [mu_schedule(s, 0, 200, 0.9, 0.05) for s in (0, 100, 200)] == pytest.approx([0.9, 0.475, 0.05])
    assert mu_schedule(50, 0, 200, 0.9, 0.05) == pytest.approx(0.05 + 0.85 * (1 + math.sqrt(0.5)) / 2)
    assert [mu_schedule(s, 0, 5, 0.3, 0.3) for s in range(10)] == pytest.approx([0.3] * 10)
    assert mu_schedule(0, 0, 0, 0.9, 0.05) == 0.05  # no decay steps: the valley from the start


def test_phi_weighs_each_token_without_a_gradient_through_the_weight():
    """sft_loss with phi: sum_t p_t (1 - p_t) NLL_t / n over the labelled tokens, its gradient w.r.t. the logits
    w_t (softmax - onehot) / n with w_t held constant (ms-swift detaches p)."""
    import torch

    from rlhfx.algos.rl.chord import sft_loss

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, -2.0, 3.0]]], requires_grad=True)
    labels = torch.tensor([[0, -100, 2]])  # the middle token is not an expert token
    p = torch.softmax(logits.detach(), -1)[0, [0, 2], [0, 2]]
    w = p * (1 - p)
    loss = sft_loss(logits, labels, phi=True)
    assert loss.item() == pytest.approx((w * -p.log()).sum().item() / 2)
    assert sft_loss(logits, labels, phi=False).item() == pytest.approx(-p.log().sum().item() / 2)
    loss.backward()
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    want = w[:, None] * (torch.softmax(logits.detach(), -1)[0, [0, 2]] - onehot) / 2
    assert torch.allclose(logits.grad[0, [0, 2]], want, atol=1e-6) and logits.grad[0, 1].abs().max() == 0


def test_chord_learns_the_expert_data_on_two_processes(tmp_path):
    """NPROC_PER_NODE=2 rlhfx rlhf with mu held at 1 (the SFT term alone): every rank draws its own 4 expert rows per
    step and the expert NLL falls. Measured (seed 42, CPU): 6.05 -> 4.62 over 6 steps, about 45 s."""
    from e2e import metrics, rlhfx, summary

    out = tmp_path / "chord"
    rlhfx("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#16", "--reward_func", "demo",
          "--max_steps", "6", "--rollout_batch_size", "2", "--n_samples_per_prompt", "2", "--batch_size", "2",
          "--generate_max_len", "8", "--chord_sft_dataset", "demo-sft#64", "--chord_sft_per_device_train_batch_size",
          "4", "--chord_mu_warmup_steps", "0", "--chord_mu_decay_steps", "0", "--chord_mu_peak", "1",
          "--chord_mu_valley", "1", "--train_type", "full", "--learning_rate", "1e-3", "--lr_scheduler_type",
          "constant", "--logging_steps", "1", "--seed", "42", "--output_dir", out, env={"NPROC_PER_NODE": "2"})
    steps = [m for m in metrics(out) if "chord_mu" in m]
    assert len(steps) == 6 and all(m["chord_mu"] == 1 for m in steps)
    assert steps[-1]["chord_sft_loss"] < steps[0]["chord_sft_loss"] - 1.0
    checksums = summary(out)["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    report = json.loads((out / "data_report.json").read_text())["datasets"]
    assert report["chord_sft_dataset train (tokenized)"]["kept"] == 64


def test_a_resumed_chord_run_continues_the_schedule_and_the_expert_batches(run_cli, tmp_path):
    """Resumed from checkpoint 2 of 4 steps: mu follows the optimizer steps already taken and the expert batches
    continue where they were, so every step logs what the uninterrupted run logged."""
    flags = ["rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#16", "--reward_func", "demo",
             "--max_steps", "4", "--save_steps", "2", "--rollout_batch_size", "2", "--n_samples_per_prompt", "2",
             "--batch_size", "2", "--generate_max_len", "8", "--chord_sft_dataset", "demo-sft#64",
             "--chord_sft_per_device_train_batch_size", "2", "--chord_mu_warmup_steps", "1", "--chord_mu_decay_steps",
             "4", "--chord_mu_peak", "0.8", "--chord_mu_valley", "0.2", "--train_type", "full", "--learning_rate",
             "1e-3", "--logging_steps", "1"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run_cli(*flags, "--output_dir", full)[0] == 0
    shutil.copytree(full, stopped)
    (stopped / "summary.json").unlink()
    assert run_cli(*flags, "--output_dir", stopped, "--resume_from_checkpoint", "latest")[0] == 0

    def chord(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [value for r in rows if "chord_mu" in r for value in (r["step"], r["chord_mu"], r["chord_sft_loss"])]

    want = chord(full)  # two optimizer steps per rollout: each step logs the mean of mu(2 s - 2) and mu(2 s - 1)
    cosine = [0.2 + 0.3 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]  # mu(1 + k): the decay from 0.8
    assert want[1::3] == pytest.approx([0.4, (cosine[1] + cosine[2]) / 2, (cosine[3] + 0.2) / 2, 0.2])
    assert chord(stopped) == pytest.approx(want, abs=1e-5)
