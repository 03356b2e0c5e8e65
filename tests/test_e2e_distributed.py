"""Two CPU processes under torchrun (gloo) train exactly like one process with the same global batch.

DDP, ZeRO-2 and ZeRO-3 (marked slow) split each global batch of 8 pairs into 2 x 4 and average the
gradients, so every logged loss, the held-out loss after training and the final weights must equal the
single-process run's (tolerance 1e-5 on losses, 1e-6 relative on the weight checksum: only the float
summation order differs; measured differences were below 1e-7 on losses and 2e-8 relative on checksums).
"""

import json

import pytest
from e2e import metrics, rlhfx, summary

RUN = ["rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#64", "--val_dataset", "demo-pref#16",
       "--train_type", "full", "--max_steps", "3", "--learning_rate", "1e-3", "--logging_steps", "1", "--seed", "7"]


def train_losses(out) -> list[float]:
    return [m["loss"] for m in metrics(out) if "loss" in m]


def weight_checksum(out) -> float:
    from transformers import AutoModelForCausalLM

    from rlhfx.training.ranks import weight_fingerprint

    return weight_fingerprint(AutoModelForCausalLM.from_pretrained(out)).sum().item()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    rlhfx(*RUN, "--batch_size", "8", "--output_dir", out)
    return out


def _deepspeed_installed() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("extra", [
    [],
    pytest.param(["--deepspeed", "zero2"], marks=pytest.mark.skipif(
        not _deepspeed_installed(), reason="deepspeed not installed (pip install 'rlhfx[deepspeed]')")),
    pytest.param(["--deepspeed", "zero3"], marks=[pytest.mark.slow, pytest.mark.skipif(
        not _deepspeed_installed(), reason="deepspeed not installed (pip install 'rlhfx[deepspeed]')")]),
], ids=["ddp", "zero2", "zero3"])
def test_two_processes_match_one_with_the_same_global_batch(single, tmp_path, extra):
    out = tmp_path / "run"
    result = rlhfx(*RUN, "--batch_size", "4", "--output_dir", out, *extra, env={"NPROC_PER_NODE": "2"})
    assert "torch.distributed.run --nproc_per_node 2" in result.stdout
    expected, got = train_losses(single), train_losses(out)
    assert len(got) == len(expected) == 3
    assert got == pytest.approx(expected, abs=1e-5)
    assert expected[-1] < expected[0] - 0.05  # it trained: the comparison is not between two untouched models
    assert summary(out)["after"]["eval_loss"] == pytest.approx(summary(single)["after"]["eval_loss"], abs=1e-5)
    checksums = summary(out)["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert checksums[0] == pytest.approx(weight_checksum(single), rel=1e-6)
    if extra:
        assert json.loads((out / "args.json").read_text())["deepspeed"] == extra[1]
