"""End to end through the CLI: ALRIGHT, MAXRIGHT and mix train jointly on demo-sft + demo-pref.

From the SFT'd tiny model (held-out SFT loss about 0.35 nats/token), 40 steps must lift held-out DPO
accuracy from chance (0.5, policy == reference) while the held-out SFT loss ends within
SFT_LOSS_BOUND times its start. On this demo task the two objectives do conflict: half the SFT answers
are refusals, which the preference data ranks below helpful answers.
"""

import json

import pytest
from e2e import metrics, rlhfx, summary

SFT_LOSS_BOUND = 1.5  # after / before, held-out SFT token-mean NLL


def joint_run(model, out, mode, *extra, env=None):
    return rlhfx("rlhf", "--rlhf_type", mode, "--model", model, "--dataset", "demo-pref", "--val_dataset", "demo-pref#64",
                 "--sft_dataset", "demo-sft", "--train_type", "full", "--batch_size", "8", "--eval_batch_size", "32",
                 "--logging_steps", "1", "--output_dir", out, *extra, env=env)


@pytest.mark.parametrize("mode, extra", [
    ("alright", []),
    ("maxright", ["--max_eval_steps", "4"]),
    ("mix", []),
])
def test_joint_training_learns_preferences_without_forgetting_sft(sft_model, tmp_path, mode, extra):
    out = tmp_path / mode
    joint_run(sft_model, out, mode, "--max_steps", "40", "--learning_rate", "5e-4", "--eval_steps", "20", *extra)
    before, after = summary(out)["before"], summary(out)["after"]
    assert before["eval_rewards/accuracies"] == pytest.approx(0.5)
    assert after["eval_rewards/accuracies"] > 0.6
    assert after["eval_sft_loss"] < SFT_LOSS_BOUND * before["eval_sft_loss"]
    assert after["eval_loss"] < before["eval_loss"]

    rows = metrics(out)
    train = [m for m in rows if "objective" in m]
    assert [m["step"] for m in train] == list(range(1, 41))  # one row per step, saying what it trained
    objectives = json.loads((out / "objectives.json").read_text())["objectives"]
    if mode == "mix":
        assert all(m["objective"] == 0.5 and "sft_loss" in m and "dpo_loss" in m for m in train)
    else:
        assert [m["objective"] for m in train] == objectives and {0, 1} <= set(objectives)
        assert all(("sft_loss" in m) == (m["objective"] == 0) and ("dpo_loss" in m) == (m["objective"] == 1) for m in train)
    with_gaps = train if mode != "alright" else train[-1:]  # ALRIGHT knows a gap once it has trained that objective
    assert all("gap/sft" in m and "gap/dpo" in m for m in with_gaps)
    assert any(m["step"] == 20 and "eval_sft_loss" in m and "eval_rewards/accuracies" in m for m in rows)
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "curves.png").exists()


def test_torchrun_ranks_choose_the_same_objective_every_step(tmp_path):
    """MAXRIGHT near a tie (lambd 0.9 on the untrained model): each rank's own losses would pick differently;
    the rank-averaged gaps keep them together. The trainer all-gathers every step's choice and stops on a mismatch."""
    out = tmp_path / "ddp"
    result = rlhfx("rlhf", "--rlhf_type", "maxright", "--model", "tiny", "--dataset", "demo-pref#32", "--val_dataset",
                   "demo-pref#8", "--sft_dataset", "demo-sft#32", "--train_type", "full", "--max_steps", "8",
                   "--batch_size", "2", "--learning_rate", "1e-3", "--lambd", "0.9", "--max_eval_steps", "2",
                   "--logging_steps", "1", "--output_dir", out, env={"NPROC_PER_NODE": "2"})
    assert "torch.distributed.run --nproc_per_node 2" in result.stdout
    record = json.loads((out / "objectives.json").read_text())
    assert len(record["rank_objectives"]) == 8 and all(len(r) == 2 and r[0] == r[1] for r in record["rank_objectives"])
    assert {0, 1} <= set(record["objectives"]) and record["ranks_agree"]
    assert [m["objective"] for m in metrics(out) if "objective" in m] == record["objectives"]
    checksums = summary(out)["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_missing_sft_dataset_is_a_clear_error(tmp_path):
    result = rlhfx("rlhf", "--rlhf_type", "alright", "--model", "tiny", "--dataset", "demo-pref#8",
                   "--output_dir", tmp_path / "x", expect_rc=2)
    assert "--sft_dataset" in result.stdout + result.stderr


def test_xright_seed_flags_set_the_sft_batch_and_its_cap(tmp_path):
    """The XRIGHT seed's spellings: one epoch = the SFT set's batches, so 24 SFT rows in batches of 12 are 2 steps."""
    out = tmp_path / "seed"
    rlhfx("rlhf", "--rlhf_type", "alright", "--pretrain", "tiny", "--ref_pretrain", "tiny", "--rlhf_dataset", "demo-pref#16",
          "--sft_dataset", "demo-sft", "--sft_max_samples", "24", "--sft_micro_train_batch_size", "12",
          "--rlhf_micro_train_batch_size", "4", "--sft_max_len", "256", "--rlhf_max_len", "256", "--max_epochs", "1",
          "--train_type", "full", "--logging_steps", "1", "--save_path", out)
    assert [m["step"] for m in metrics(out) if "objective" in m] == [1, 2]
    assert json.loads((out / "args.json").read_text())["sft_batch_size"] == 12
