"""The policy-loss variants learn: GRPO on the demo task (as tests/test_e2e_rl.py's GRPO run: the SFT'd tiny model's
held-out greedy reward starts at 0) with each variant's flags, and the variant's own statistics in the log.

What each flag does to the loss is checked by hand in tests/test_rl_math.py and, through the trainer's own update
step, in tests/test_rl_trainer_steps.py; here the run must learn with it. Measured (seed 42, CPU): see VARIANTS.
"""

import pytest
from e2e import metrics, rlhfx, summary

GRPO = ["--rlhf_type", "grpo", "--dataset", "demo-prompts", "--val_dataset", "demo-prompts#32", "--reward_func", "demo",
        "--train_type", "full", "--learning_rate", "1e-4", "--lr_scheduler_type", "constant", "--max_steps", "20",
        "--rollout_batch_size", "8", "--n_samples_per_prompt", "4", "--batch_size", "32", "--generate_max_len", "16",
        "--logging_steps", "1"]

VARIANTS = {  # name: (flags, keys every step logs)
    "gspo": (["--policy_loss", "gspo"], []),
    "dapo": (["--cliprange_high", "0.28", "--loss_type", "dapo", "--dynamic_sampling", "--overlong_buffer_len", "4"],
             ["varied_groups", "sampling_rounds", "overlong_penalty"]),
    "dr_grpo": (["--advantage_estimator", "dr_grpo", "--loss_agg_mode", "seq-mean-token-sum"], []),
    "kl_unbiased": (["--kl_unbiased_gradient", "--overlong_filter"], ["kl_loss", "truncated"]),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_raises_the_held_out_reward(sft_model, tmp_path, name):
    flags, keys = VARIANTS[name]
    out = tmp_path / name
    rlhfx("rlhf", "--model", sft_model, *GRPO, *flags, "--output_dir", out)
    result = summary(out)
    assert result["before"]["eval_reward"] == pytest.approx(0.0)
    assert result["after"]["eval_reward"] >= result["before"]["eval_reward"] + 0.25
    steps = [m for m in metrics(out) if "reward" in m]
    assert len(steps) == 20 and all(key in m for m in steps for key in keys)
    if name == "dapo":  # groups whose rewards were all equal were replaced by drawing more prompts
        assert any(m["varied_groups"] < 1 and m["sampling_rounds"] >= 1 for m in steps)
