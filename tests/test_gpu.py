"""On a CUDA GPU, what the CPU suite cannot check: bf16 mixed precision over float32 master weights, online RL
under autocast, and the refusal of more processes than GPUs. The rest of the suite hides the GPUs (conftest.py);
these tests give them back to their rlhfx runs. Skipped without a GPU (CI has none).
"""

import json
import os

import pytest
from conftest import gpu_env
from e2e import rlhfx, summary
from safetensors.torch import load_file

GPU = gpu_env()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPU is None, reason="needs a CUDA GPU")]


def test_full_dpo_keeps_float32_master_weights_and_learns(sft_model, tmp_path):
    out = tmp_path / "dpo"
    rlhfx("rlhf", "--rlhf_type", "dpo", "--model", sft_model, "--dataset", "demo-pref", "--train_type", "full",
          "--max_steps", "125", "--batch_size", "16", "--learning_rate", "5e-4", "--output_dir", out, env=GPU)
    result = summary(out)
    assert result["before"]["eval_rewards/accuracies"] == pytest.approx(0.5, abs=0.05)
    assert result["after"]["eval_rewards/accuracies"] >= 0.9
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_small_updates_survive_in_float32_master_weights_and_round_away_in_pure_bf16(sft_model, tmp_path):
    """Why `auto` keeps fully trained weights in float32: one Adam step moves a weight by about the learning rate,
    far below bf16's resolution (1/256 of the weight), so in pure bf16 almost every matrix entry stays put."""
    start = load_file(sft_model / "model.safetensors")
    moved = {}
    for dtype in ("auto", "bfloat16"):
        out = tmp_path / dtype
        rlhfx("rlhf", "--rlhf_type", "dpo", "--model", sft_model, "--dataset", "demo-pref#64", "--train_type", "full",
              "--max_steps", "4", "--batch_size", "16", "--learning_rate", "1e-6", "--torch_dtype", dtype,
              "--output_dir", out, env=GPU)
        end = load_file(out / "model.safetensors")
        pairs = [(start[name].to(end[name].dtype), end[name]) for name in end if name.endswith("proj.weight")]
        moved[dtype] = sum((a != b).sum().item() for a, b in pairs) / sum(a.numel() for a, _ in pairs)
    assert moved["auto"] > 0.9 and moved["bfloat16"] < 0.2, moved


def test_grpo_under_autocast_raises_the_held_out_reward(sft_model, tmp_path):
    out = tmp_path / "grpo"
    rlhfx("rlhf", "--rlhf_type", "grpo", "--model", sft_model, "--dataset", "demo-prompts", "--train_type", "full",
          "--generate_max_len", "16", "--lr_scheduler_type", "constant", "--reward_func", "demo", "--val_dataset",
          "demo-prompts#32", "--learning_rate", "1e-4", "--max_steps", "20", "--rollout_batch_size", "8",
          "--n_samples_per_prompt", "4", "--batch_size", "32", "--output_dir", out, env=GPU)
    result = summary(out)
    assert result["after"]["eval_reward"] >= result["before"]["eval_reward"] + 0.25


def test_more_processes_than_gpus_is_refused_before_launch(tmp_path):
    gpus = len(GPU["CUDA_VISIBLE_DEVICES"].split(","))
    result = rlhfx("rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#8", "--max_steps", "1",
                   "--output_dir", tmp_path / "out", env={**GPU, "NPROC_PER_NODE": str(gpus + 1)}, expect_rc=2)
    assert f"NPROC_PER_NODE={gpus + 1} but {gpus} GPU" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_flash_attn_without_its_package_is_a_clear_error(tmp_path):
    hidden = tmp_path / "no_flash_attn"  # a module that fails to import shadows flash_attn, installed or not
    hidden.mkdir()
    (hidden / "flash_attn.py").write_text("raise ImportError('flash_attn hidden by the test')\n")
    path = os.pathsep.join(p for p in (str(hidden), os.environ.get("PYTHONPATH")) if p)
    result = rlhfx("rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#8", "--max_steps", "1",
                   "--flash_attn", "--output_dir", tmp_path / "out", env={**GPU, "PYTHONPATH": path}, expect_rc=2)
    assert "--flash_attn needs the flash_attn package" in result.stderr and "pip install flash-attn" in result.stderr
