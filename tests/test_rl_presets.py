"""`--rlhf_type grpo | rloo | reinforce_pp` are presets of the ppo trainer: defaults change, explicit flags win."""

import re

import pytest

from rlhfx.algos.rl import resolve_config
from rlhfx.arguments import parse_args
from rlhfx.errors import RlhfxError


def config(*argv):
    args = parse_args("rlhf", list(argv))
    return resolve_config(args, args.rlhf_type)


def test_presets_set_their_defaults():
    ppo, grpo, rloo, rpp = (config("--rlhf_type", name) for name in ("ppo", "grpo", "rloo", "reinforce_pp"))
    assert (ppo.advantage_estimator, ppo.n_samples_per_prompt, ppo.kl_estimator, ppo.use_kl_loss, ppo.kl_coef) == \
        ("gae", 1, "k1", False, 0.01)
    assert (grpo.advantage_estimator, grpo.n_samples_per_prompt, grpo.kl_estimator, grpo.use_kl_loss, grpo.kl_coef) == \
        ("group_norm", 4, "k3", True, 0.04)
    assert (rloo.advantage_estimator, rloo.n_samples_per_prompt) == ("rloo", 4)
    assert (rpp.advantage_estimator, rpp.uses_critic, ppo.uses_critic) == ("reinforce", False, True)


def test_presets_change_defaults_only():
    """grpo, rloo and reinforce_pp declare ppo's flags with the same help and spellings; only defaults differ, and the
    flag table states each one's default."""
    from dataclasses import fields

    from rlhfx.algos import ALGOS
    from rlhfx.algos.options import RLOptions, default_of
    from rlhfx.arguments import FLAGS

    ppo = {f.name: f for f in fields(RLOptions)}
    for name in ("grpo", "rloo", "reinforce_pp"):
        preset = {f.name: f for f in fields(ALGOS[name].options)}
        assert preset.keys() == ppo.keys() and all(preset[n].metadata == ppo[n].metadata for n in ppo)
        for changed in (n for n in ppo if default_of(preset[n]) != default_of(ppo[n])):
            row = next(f for f in FLAGS if f.name == changed)
            assert row.default is None and re.search(rf"\b{name}\b[a-z_, ]*: {default_of(preset[changed])}\b", row.help)


def test_explicit_flags_and_openrlhf_spellings_win_over_the_preset():
    grpo = config("--rlhf_type", "grpo", "--init_kl_coef", "0", "--kl_estimator", "k2", "--use_kl_loss", "false",
                  "--num_generations", "8", "--eps_clip", "0.1", "--ppo_epochs", "2",
                  "--local_rollout_forward_batch_size", "4", "--max_new_tokens", "20")
    assert (grpo.kl_coef, grpo.kl_estimator, grpo.use_kl_loss, grpo.n_samples_per_prompt) == (0.0, "k2", False, 8)
    assert (grpo.cliprange, grpo.num_ppo_epochs) == (0.1, 2)
    assert config("--rlhf_type", "ppo", "--value_clip", "0.3").cliprange_value == 0.3
    assert (grpo.micro_rollout_batch_size, grpo.generate_max_len) == (4, 20)
    assert config("--rlhf_type", "ppo", "--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "2").uses_critic is False


@pytest.mark.parametrize("argv, message", [
    (["--rlhf_type", "ppo", "--advantage_estimator", "rloo"], "--n_samples_per_prompt is 1"),
    (["--rlhf_type", "grpo", "--dual_clip", "0.5"], "--dual_clip is 0.5"),
    (["--rlhf_type", "grpo", "--critic_learning_rate", "1e-5"], "trains no critic"),
    (["--rlhf_type", "ppo", "--rollout_batch_size", "0"], "--rollout_batch_size is 0"),
    (["--rlhf_type", "grpo", "--temperature", "0"], "every advantage is 0"),
    (["--rlhf_type", "rloo", "--temperature", "0"], "every advantage is 0"),
    (["--rlhf_type", "ppo", "--temperature", "0"], "greedy decoding does not sample"),
])
def test_bad_combinations_are_refused(argv, message):
    with pytest.raises(RlhfxError, match=message.replace("-", r"\-")):
        config(*argv)


def test_defaults_that_differ_from_openrlhf_are_deliberate():
    """GAE lambda 0.95 and value clip 0.2 (TRL's and the PPO papers'), where OpenRLHF defaults to 1.0 and 0.5."""
    ppo = config("--rlhf_type", "ppo")
    assert (ppo.lam, ppo.cliprange_value, ppo.gamma, ppo.reward_clip_range) == (0.95, 0.2, 1.0, 10.0)


@pytest.mark.parametrize("argv, expected", [
    ([], ("ppo", "token-mean", 0.2, 0.2)),
    (["--cliprange_high", "0.28"], ("ppo", "token-mean", 0.2, 0.28)),
    (["--epsilon", "0.1", "--epsilon_high", "0.3"], ("ppo", "token-mean", 0.1, 0.3)),  # ms-swift
    (["--eps_clip_low_high", "0.2", "0.28"], ("ppo", "token-mean", 0.2, 0.28)),  # OpenRLHF
    (["--policy_loss", "gspo"], ("gspo", "seq-mean-token-mean", 0.2, 0.2)),
    (["--policy_loss_type", "gspo", "--loss_agg_mode", "token-mean"], ("gspo", "token-mean", 0.2, 0.2)),
    (["--importance_sampling_level", "sequence"], ("gspo", "seq-mean-token-mean", 0.2, 0.2)),  # ms-swift
    (["--loss_type", "grpo"], ("ppo", "seq-mean-token-mean", 0.2, 0.2)),
    (["--loss_type", "bnpo"], ("ppo", "token-mean", 0.2, 0.2)),
    (["--loss_type", "dapo"], ("ppo", "token-mean", 0.2, 0.2)),
    (["--loss_type", "dr_grpo"], ("ppo", "seq-mean-token-sum", 0.2, 0.2)),
    (["--loss_type", "sapo", "--importance_sampling_level", "token"], ("ppo", "seq-mean-token-mean", 0.2, 0.2)),
    (["--loss_agg_mode", "seq-mean-token-sum"], ("ppo", "seq-mean-token-sum", 0.2, 0.2)),
])
def test_policy_loss_flags_and_their_spellings(argv, expected):
    grpo = config("--rlhf_type", "grpo", *argv)
    assert (grpo.policy_loss, grpo.loss_agg_mode, grpo.cliprange, grpo.cliprange_high) == expected


@pytest.mark.parametrize("argv, message", [
    (["--loss_type", "sigmoid"], "is a DPO loss"),
    (["--loss_type", "grpo", "--loss_agg_mode", "token-mean"], "means --loss_agg_mode seq-mean-token-mean"),
    (["--policy_loss", "ppo", "--importance_sampling_level", "sequence"], "ask for different losses"),
    (["--eps_clip_low_high", "0.2"], "takes two values"),
    (["--eps_clip_low_high", "0.2", "0.3", "--cliprange", "0.1"], "replaces --cliprange"),
    (["--cliprange", "1.5"], "use 0 < --cliprange < 1"),
    (["--tau_pos", "2"], "only --loss_type sapo uses"),
    (["--loss_type", "sapo", "--tau_neg", "0"], "must be positive"),
    (["--loss_type", "sapo", "--dual_clip", "3"], "has no clip"),
    (["--delta", "1.2", "--epsilon_high", "0.28"], "1.2 is below 1"),
    (["--loss_type", "fipo", "--fipo_decay_rate", "0"], "--fipo_decay_rate is 0"),
    (["--loss_type", "fipo", "--fipo_clip_range", "1", "--fipo_clip_high_only", "false"], "needs 0 <= c < 1"),
    (["--fipo_clip_high_only", "false", "--fipo_safety_threshold", "3"], "only --loss_type fipo uses"),
    (["--loss_type", "real", "--batch_size", "4", "--real_tau", "0"], "--real_tau is 0"),
    (["--loss_type", "real", "--batch_size", "6"], "not a multiple of --num_generations 4"),
    (["--loss_type", "real", "--batch_size", "4", "--scale_rewards", "group"], "REAL reads only the sign"),
    (["--loss_type", "real", "--batch_size", "4", "--importance_sampling_level", "sequence"], "does not apply to "
     "--loss_type real"),
    (["--loss_type", "real", "--batch_size", "4", "--delta", "3"], "--dual_clip does not apply to --loss_type real"),
    (["--loss_type", "real", "--batch_size", "4", "--advantage_estimator", "gae"], "needs a group estimator"),
])
def test_policy_loss_flag_conflicts_are_refused(argv, message):
    with pytest.raises(RlhfxError, match=message.replace("-", r"\-")):
        config("--rlhf_type", "grpo", *argv)


def test_fipo_and_real_read_their_knobs():
    """ms-swift's defaults, and the values of its examples/train/grpo/internal/fipo.sh; REAL's rewards unscaled."""
    fipo = config("--rlhf_type", "grpo", "--loss_type", "fipo")
    assert (fipo.loss_agg_mode, fipo.fipo_decay_rate, fipo.fipo_clip_range, fipo.fipo_clip_high_only,
            fipo.fipo_safety_threshold, fipo.dual_clip) == ("token-mean", 32.0, 0.2, True, 4.0, None)
    fipo = config("--rlhf_type", "grpo", "--loss_type", "fipo", "--delta", "10.0", "--epsilon_high", "0.28",
                  "--fipo_decay_rate", "32", "--fipo_clip_range", "0.2", "--fipo_clip_high_only", "false",
                  "--fipo_safety_threshold", "3.0", "--dynamic_sample", "true")
    assert (fipo.dual_clip, fipo.cliprange_high, fipo.fipo_clip_high_only, fipo.fipo_safety_threshold,
            fipo.dynamic_sampling) == (10.0, 0.28, False, 3.0, True)
    real = config("--rlhf_type", "grpo", "--loss_type", "real", "--per_device_train_batch_size", "8",
                  "--num_generations", "8")
    assert (real.real_tau, real.scale_rewards, real.loss_agg_mode) == (0.5, "none", "token-mean")


def test_sapo_reads_its_temperatures():
    sapo = config("--rlhf_type", "grpo", "--loss_type", "sapo", "--tau_pos", "1", "--tau_neg", "1.05")
    assert (sapo.loss_type, sapo.tau_pos, sapo.tau_neg) == ("sapo", 1.0, 1.05)


def test_kl_in_reward_is_the_opposite_of_use_kl_loss():
    assert config("--rlhf_type", "grpo", "--kl_in_reward", "true").use_kl_loss is False
    assert config("--rlhf_type", "ppo", "--kl_in_reward", "false").use_kl_loss is True
    assert config("--rlhf_type", "grpo", "--kl_in_reward", "true", "--use_kl_loss", "false").use_kl_loss is False


@pytest.mark.parametrize("argv, message", [
    (["--rlhf_type", "ppo", "--dynamic_sampling"], "needs a group estimator"),
    (["--rlhf_type", "grpo", "--overlong_buffer_len", "100", "--generate_max_len", "64"], "must be in (0, --generate_max_len 64]"),
    (["--rlhf_type", "grpo", "--dynamic_sampling", "--max_resample_times", "-1"], "--max_resample_times is -1"),
    (["--rlhf_type", "grpo", "--kl_in_reward", "true", "--use_kl_loss", "true"], "contradict each other"),
])
def test_dapo_flag_combinations_are_refused(argv, message):
    with pytest.raises(RlhfxError, match=message.replace("-", r"\-").replace("(", r"\(").replace("]", r"\]")):
        config(*argv)


@pytest.mark.parametrize("argv, message", [
    (["--enable_vllm_is_correction"], "use --engine vllm"),
    (["--engine", "vllm", "--enable_vllm_is_correction", "--vllm_is_truncated_threshold", "2", "5"], "0 <= LOW <= 1 <= HIGH"),
    (["--use_kl_loss", "false", "--kl_unbiased_gradient"], "add --use_kl_loss"),
])
def test_rollout_correction_and_kl_gradient_flags_are_checked(argv, message):
    with pytest.raises(RlhfxError, match=message.replace("-", r"\-")):
        config("--rlhf_type", "grpo", *argv)


def test_rollout_correction_and_kl_gradient_spellings():
    grpo = config("--rlhf_type", "grpo", "--engine", "vllm", "--enable_vllm_is_correction", "--vllm_is_correction_type",
                  "icepop", "--vllm_is_truncated_threshold", "0.8", "1.25", "--algo.kl.unbiased_gradient")
    assert (grpo.enable_vllm_is_correction, grpo.vllm_is_correction_type, grpo.vllm_is_truncated_threshold,
            grpo.kl_unbiased_gradient) == (True, "icepop", [0.8, 1.25], True)
