"""GRPO with vLLM rollouts and the rollout correction (--enable_vllm_is_correction): the held-out reward rises as
without it (tests/test_vllm_rl.py), and the correction's statistics are logged every step: vLLM's log-probs are
the trainer's up to float error on CPU, so icepop masks almost nothing and the rollout KL stays near 0. Measured
(seed 42, CPU, the same command): held-out greedy reward 0 -> 0.50 with either, rollout_kl below 1e-7, nothing
masked. Run in .venv-vllm by scripts/test.sh; skipped where vLLM does not import."""

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here (bash scripts/setup_vllm.sh creates .venv-vllm)")

from e2e import metrics, rlhfx, summary  # noqa: E402


@pytest.mark.parametrize("kind", ["tis", "icepop"])
def test_grpo_with_rollout_correction_raises_the_held_out_reward(sft_model, tmp_path, kind):
    out = tmp_path / kind
    rlhfx("rlhf", "--rlhf_type", "grpo", "--engine", "vllm", "--model", sft_model, "--dataset", "demo-prompts",
          "--val_dataset", "demo-prompts#32", "--reward_func", "demo", "--train_type", "full", "--learning_rate", "1e-4",
          "--lr_scheduler_type", "constant", "--max_steps", "20", "--rollout_batch_size", "8",
          "--n_samples_per_prompt", "4", "--batch_size", "32", "--generate_max_len", "16", "--logging_steps", "1",
          "--enable_vllm_is_correction", "--vllm_is_correction_type", kind, "--output_dir", out)
    result = summary(out)
    assert result["after"]["eval_reward"] >= result["before"]["eval_reward"] + 0.25
    steps = [m for m in metrics(out) if "reward" in m]
    assert len(steps) == 20 and all(abs(m["rollout_kl"]) < 1e-2 and m["is_masked"] < 0.05 for m in steps)
