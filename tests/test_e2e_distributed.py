"""Two CPU processes under torchrun (gloo) train exactly like one process with the same global batch.

DDP, ZeRO-2 and ZeRO-3 split each global batch of 8 rows into 2 x 4 and average the gradients, so every logged
loss, the held-out loss after training and the saved weights (full weights, or the LoRA adapter) must equal the
single-process run's: tolerance 1e-5 on losses and on every saved weight (only the float summation order
differs; measured below 1e-6 on losses and 2.5e-7 on weights, where ranks training apart differ by ~1e-3).
LoRA runs used to fail here: the eval before training marked the bare model as prepared, so accelerate never
wrapped it in DDP and each rank trained alone. SFT turns LoRA dropout off: one process and two draw their
dropout masks from different random streams, so with dropout on they agree only in distribution.
"""

import json

import pytest
import torch
from e2e import metrics, rlhfx, summary

COMMON = ["--max_steps", "3", "--learning_rate", "1e-3", "--logging_steps", "1", "--seed", "7", "--eval_batch_size", "4"]
RUNS = {
    "dpo-full": ["rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#64", "--val_dataset",
                 "demo-pref#16", "--train_type", "full", *COMMON],
    "dpo-lora": ["rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#64", "--val_dataset",
                 "demo-pref#16", "--train_type", "lora", *COMMON],
    "sft-lora": ["sft", "--model", "tiny", "--dataset", "demo-sft#64", "--val_dataset", "demo-sft#16",
                 "--train_type", "lora", "--lora_dropout", "0", *COMMON],
}


def train_losses(out) -> list[float]:
    return [m["loss"] for m in metrics(out) if "loss" in m]


def saved_weights(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    lora = (out / "adapter_model.safetensors")
    return load_file(lora if lora.exists() else out / "model.safetensors")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run of a RUNS entry with the whole global batch of 8, run once per module."""
    done = {}

    def run(name):
        if name not in done:
            done[name] = tmp_path_factory.mktemp(name) / "run"
            rlhfx(*RUNS[name], "--batch_size", "8", "--output_dir", done[name])
        return done[name]

    return run


def _deepspeed_installed() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


NEEDS_DEEPSPEED = pytest.mark.skipif(not _deepspeed_installed(),
                                     reason="deepspeed not installed (pip install 'rlhfx[deepspeed]')")


@pytest.mark.parametrize("name,extra", [
    ("dpo-full", []),
    pytest.param("dpo-full", ["--deepspeed", "zero2"], marks=NEEDS_DEEPSPEED),
    pytest.param("dpo-full", ["--deepspeed", "zero3"], marks=[pytest.mark.slow, NEEDS_DEEPSPEED]),
    ("dpo-lora", []),
    pytest.param("dpo-lora", ["--deepspeed", "zero2"], marks=[pytest.mark.slow, NEEDS_DEEPSPEED]),
    pytest.param("dpo-lora", ["--deepspeed", "zero3"], marks=[pytest.mark.slow, NEEDS_DEEPSPEED]),
    ("sft-lora", []),
], ids=["dpo-full-ddp", "dpo-full-zero2", "dpo-full-zero3", "dpo-lora-ddp", "dpo-lora-zero2", "dpo-lora-zero3",
        "sft-lora-ddp"])
def test_two_processes_match_one_with_the_same_global_batch(single, tmp_path, name, extra):
    out, reference = tmp_path / "run", single(name)
    result = rlhfx(*RUNS[name], "--batch_size", "4", "--output_dir", out, *extra, env={"NPROC_PER_NODE": "2"})
    assert "torch.distributed.run --nproc_per_node 2" in result.stdout
    expected, got = train_losses(reference), train_losses(out)
    assert len(got) == len(expected) == 3
    assert got == pytest.approx(expected, abs=1e-5)
    assert expected[-1] < expected[0] - 0.05  # it trained: the comparison is not between two untouched models
    assert summary(out)["before"]["eval_loss"] == pytest.approx(summary(reference)["before"]["eval_loss"], abs=1e-5)
    assert summary(out)["after"]["eval_loss"] == pytest.approx(summary(reference)["after"]["eval_loss"], abs=1e-5)
    checksums = summary(out)["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    mine, theirs = saved_weights(out), saved_weights(reference)
    # (a ZeRO save also writes the tied lm_head.weight that the one-process save leaves to embed_tokens)
    assert theirs.keys() <= mine.keys() and (("lora" in name) == any("lora_B" in key for key in mine))
    assert max((mine[k] - theirs[k]).abs().max().item() for k in theirs) <= 1e-5
    if extra:
        assert json.loads((out / "args.json").read_text())["deepspeed"] == extra[1]


def test_a_failed_rank_prints_its_error_once_without_torchrun_traceback(tmp_path):
    missing = tmp_path / "missing.jsonl"  # read inside the ranks, after torchrun started them
    result = rlhfx("sft", "--model", "tiny", "--dataset", missing, "--output_dir", tmp_path / "run",
                   env={"NPROC_PER_NODE": "2"}, expect_rc=2)
    assert "torch.distributed.run --nproc_per_node 2" in result.stdout
    assert result.stderr.count("error:") == result.stderr.count("fix:") == 1, result.stderr  # not once per rank
    assert "missing.jsonl' does not exist" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
