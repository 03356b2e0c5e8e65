"""--rlhf_type gkd: the collator's prompt/completion split, and a run in which the student moves toward the teacher."""

import torch
from e2e import rlhfx, summary

from rlhfx.algos.gkd import GKDCollator, last_answer_start


def test_collator_splits_before_the_last_answer():
    rows = [{"input_ids": [1, 2, 3, 4, 5], "assistant_masks": [0, 0, 1, 1, 0]},
            {"input_ids": [7, 8, 9], "assistant_masks": [0, 1, 1]}]
    assert last_answer_start([0, 1, 1, 0, 1, 1]) == 4
    batch = GKDCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 3, 4, -100], [-100, 8, 9, -100, -100]]
    assert batch["prompts"].tolist() == [[1, 2], [0, 7]]  # left padded: generation continues each prompt
    assert batch["prompt_attention_mask"].tolist() == [[1, 1], [0, 1]]


def make_teacher(folder):
    """The tiny model with its final norm scaled up: the same ranking of next tokens, sharper distributions. The
    student reaches it by learning that scale, a direction a few steps can follow."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfx.registry.tiny import tiny_model_path

    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    with torch.no_grad():
        teacher.model.norm.weight.mul_(4.0)
    teacher.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_path()).save_pretrained(folder)
    return folder


def test_gkd_student_moves_toward_the_teacher(tmp_path):
    teacher = make_teacher(tmp_path / "teacher")
    out = tmp_path / "gkd"
    rlhfx("rlhf", "--rlhf_type", "gkd", "--model", "tiny", "--teacher_model", teacher, "--dataset", "demo-sft#128",
          "--val_dataset", "demo-sft#32", "--train_type", "full", "--max_steps", "16", "--batch_size", "8",
          "--learning_rate", "3e-3", "--max_completion_length", "16", "--lmbda", "0.5", "--output_dir", out)
    before, after = summary(out)["before"]["eval_gkd_loss"], summary(out)["after"]["eval_gkd_loss"]
    # held-out JSD to the teacher on the data's responses: apart at the start (a student that were its own teacher
    # would start at 0) and a fifth closer or more after 16 steps (measured: 0.132 -> 0.081)
    assert before > 0.1, (before, after)
    assert after < 0.8 * before, (before, after)
    assert summary(out)["global_step"] == 16
