"""`--rlhf_type grpo | rloo | reinforce_pp` are presets of the ppo trainer: defaults change, explicit flags win."""

import pytest

from rlhfx.algos.ppo import resolve_config
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


def test_explicit_flags_and_openrlhf_spellings_win_over_the_preset():
    grpo = config("--rlhf_type", "grpo", "--init_kl_coef", "0", "--kl_estimator", "k2", "--use_kl_loss", "false",
                  "--num_generations", "8", "--eps_clip", "0.1", "--value_clip", "0.3", "--ppo_epochs", "2",
                  "--local_rollout_forward_batch_size", "4", "--max_new_tokens", "20")
    assert (grpo.kl_coef, grpo.kl_estimator, grpo.use_kl_loss, grpo.n_samples_per_prompt) == (0.0, "k2", False, 8)
    assert (grpo.cliprange, grpo.cliprange_value, grpo.num_ppo_epochs) == (0.1, 0.3, 2)
    assert (grpo.micro_rollout_batch_size, grpo.generate_max_len) == (4, 20)
    assert config("--rlhf_type", "ppo", "--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "2").uses_critic is False


@pytest.mark.parametrize("argv, message", [
    (["--rlhf_type", "ppo", "--advantage_estimator", "rloo"], "--n_samples_per_prompt is 1"),
    (["--rlhf_type", "grpo", "--dual_clip", "0.5"], "--dual_clip is 0.5"),
    (["--rlhf_type", "grpo", "--critic_learning_rate", "1e-5"], "trains no critic"),
    (["--rlhf_type", "ppo", "--rollout_batch_size", "0"], "--rollout_batch_size is 0"),
])
def test_bad_combinations_are_refused(argv, message):
    with pytest.raises(RlhfxError, match=message.replace("-", r"\-")):
        config(*argv)
