"""End to end through the `rlhfx` CLI: KTO, CPO, SimPO and ORPO from the SFT'd tiny model on the demo data.

Held-out data is the bundled validation set of each demo data set (colour/animal pairs never seen in
training), evaluated by the runner before and after training (summary.json "before"/"after").
"""

import json

import pytest
from e2e import metrics, rlhfx, summary

FAST = ["--train_type", "full", "--batch_size", "16", "--learning_rate", "5e-4", "--seed", "42"]


@pytest.mark.parametrize("name", ["cpo", "simpo", "orpo"])
def test_reference_free_methods_learn_the_heldout_preference(sft_model, tmp_path, name):
    out = tmp_path / name
    rlhfx("rlhf", "--rlhf_type", name, "--model", sft_model, "--dataset", "demo-pref", "--max_steps", "40", *FAST,
          "--output_dir", out)
    before, after = summary(out)["before"], summary(out)["after"]
    assert abs(before["eval_rewards/accuracies"] - 0.5) < 0.15, before
    assert after["eval_rewards/accuracies"] >= 0.8, after
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"]
    logged = [m for m in metrics(out) if "rewards/accuracies" in m]
    assert logged and {"rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(logged[-1])
    assert (out / "model.safetensors").exists()


def test_kto_opens_a_heldout_reward_gap(sft_model, tmp_path):
    out = tmp_path / "kto"
    result = rlhfx("rlhf", "--rlhf_type", "kto", "--model", sft_model, "--dataset", "demo-kto", "--max_steps", "40",
                   *FAST, "--output_dir", out)
    before, after = summary(out)["before"], summary(out)["after"]
    assert after["eval_rewards/margins"] > 0
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"]
    assert after["eval_rewards/chosen"] > after["eval_rewards/rejected"]
    assert "eval_kl" in after
    assert any("kl" in m and "rewards/margins" in m for m in metrics(out))
    assert "kto warning" not in result.stdout  # demo-kto is balanced: w_d n_d / (w_u n_u) = 1


def test_kto_on_preference_pairs_says_how_they_map_and_warns_about_weights(sft_model, tmp_path):
    out = tmp_path / "kto_pairs"
    result = rlhfx("rlhf", "--rlhf_type", "kto", "--model", sft_model, "--dataset", "demo-pref#64", "--val_dataset",
                   "demo-pref#16", "--undesirable_weight", "2", "--max_steps", "2", "--batch_size", "8",
                   "--output_dir", out)
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "chosen -> desirable" in text and "rejected -> undesirable" in text
    assert "kto warning" in text and "--desirable_weight to" in text
    assert summary(out)["global_step"] == 2


@pytest.mark.parametrize("name, shown, hidden", [
    ("kto", ["--beta", "--desirable_weight", "--undesirable_weight", "--ref_model"],
     ["--cpo_alpha", "--simpo_gamma", "--label_smoothing", "--rpo_alpha"]),
    ("cpo", ["--beta", "--cpo_alpha"], ["--simpo_gamma", "--desirable_weight", "--ref_model", "--label_smoothing"]),
    ("simpo", ["--beta", "--cpo_alpha", "--simpo_gamma"], ["--desirable_weight", "--ref_model", "--rpo_alpha"]),
    ("orpo", ["--beta"], ["--cpo_alpha", "--simpo_gamma", "--desirable_weight", "--ref_model", "--loss_type"]),
])
def test_help_shows_only_the_flags_of_the_algorithm(name, shown, hidden):
    text = rlhfx("rlhf", "--rlhf_type", name, "--help").stdout
    flags = {token.rstrip(",") for token in text.split() if token.startswith("--")}
    assert set(shown) <= flags, set(shown) - flags
    assert not set(hidden) & flags, set(hidden) & flags


def test_nca_learns_the_heldout_preference_and_keeps_the_chosen_likely(sft_model, tmp_path):
    """NCA scores each answer against the reference on its own: the chosen answers' reward stays above zero while
    the held-out accuracy rises (DPO's margin alone lets both fall)."""
    out = tmp_path / "nca"
    rlhfx("rlhf", "--rlhf_type", "nca", "--model", sft_model, "--dataset", "demo-pref", "--max_steps", "40", *FAST,
          "--beta", "0.5", "--output_dir", out)
    before, after = summary(out)["before"], summary(out)["after"]
    assert abs(before["eval_rewards/accuracies"] - 0.5) < 0.15, before
    assert after["eval_rewards/accuracies"] >= 0.8, after
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"]
    assert after["eval_rewards/chosen"] > 0 > after["eval_rewards/rejected"], after
    assert json.loads((out / "args.json").read_text())["beta"] == 0.5
