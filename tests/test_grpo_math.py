"""`rlhfx rlhf --rlhf_type grpo --reward_funcs accuracy format` learns demo-math: after a short SFT warm-up (right
format, right sum half of the time) GRPO raises the share of right sums in its own rollouts."""

import json

from e2e import rlhfx, summary

from rlhfx.rewards.builtin import answers_match, final_answer

STEPS = 30


def accuracy_by_step(out) -> dict[int, float]:
    """Share of right answers per rollout step, recomputed from --log_completions' completions.jsonl."""
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    steps: dict[int, list[float]] = {}
    for row in rows:
        steps.setdefault(row["step"], []).append(float(answers_match(final_answer(row["completion"]), row["solution"])))
    return {step: sum(v) / len(v) for step, v in steps.items()}


def test_grpo_accuracy_rises_on_demo_math(tmp_path):
    sft = tmp_path / "sft"
    rlhfx("sft", "--model", "tiny", "--dataset", "demo-math-sft", "--train_type", "full", "--num_train_epochs", "1",
          "--batch_size", "16", "--learning_rate", "3e-3", "--save_steps", "-1", "--output_dir", sft)
    out = tmp_path / "grpo"
    rlhfx("rlhf", "--rlhf_type", "grpo", "--model", sft, "--dataset", "demo-math", "--reward_funcs", "accuracy",
          "format", "--train_type", "full", "--learning_rate", "1e-3", "--max_steps", STEPS,
          "--max_completion_length", "40", "--log_completions", "true", "--save_steps", "-1", "--output_dir", out)
    accuracy = accuracy_by_step(out)
    assert sorted(accuracy) == list(range(1, STEPS + 1))
    first, last = sum(accuracy[s] for s in range(1, 6)) / 5, sum(accuracy[s] for s in range(STEPS - 4, STEPS + 1)) / 5
    assert last > first + 0.15, accuracy
    assert summary(out)["global_step"] == STEPS
