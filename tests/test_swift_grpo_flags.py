"""ms-swift / TRL GRPO flags: --scale_rewards (what group_norm divides the group-centred rewards by, by hand and end to
end) and --move_model_batches (accepted with a note)."""

import math

import pytest
import torch
from cli_inprocess import run_cli  # noqa: F401 (fixture)

from rlhfx.algos import rl_math
from rlhfx.arguments import parse_args
from rlhfx.errors import RlhfxError
from rlhfx.training.swift_flags import apply_swift_flags

SCORES = [1.0, 0.0, 0.5, 1.0, 0.0, 0.0]  # two prompts x 3 samples
CENTRED = [0.5, -0.5, 0.0, 2 / 3, -1 / 3, -1 / 3]  # group means 0.5 and 1/3
GROUP_STD = [0.5] * 3 + [math.sqrt(1 / 3)] * 3  # sqrt((0.25 + 0.25 + 0) / 2), sqrt((4/9 + 1/9 + 1/9) / 2)
BATCH_STD = math.sqrt((2.25 - 6 * (2.5 / 6) ** 2) / 5)  # sample std of all six: sum of squares 2.25, mean 2.5/6


@pytest.mark.parametrize("scale, expected", [
    ("group", [c / (s + 1e-9) for c, s in zip(CENTRED, GROUP_STD)]),
    ("batch", [c / (BATCH_STD + 1e-9) for c in CENTRED]),
    ("none", CENTRED),
])
def test_group_norm_scales_by_hand(scale, expected):
    out = rl_math.group_scores(torch.tensor(SCORES), 3, "group_norm", scale)
    assert out.tolist() == pytest.approx(expected, abs=1e-6)


def test_batch_std_spans_every_rank():
    # two ranks each holding [1, 0, 0.5]: the batch is all six, sample std sqrt((2.5 - 6 * 0.25) / 5)
    out = rl_math.group_scores(torch.tensor([1.0, 0.0, 0.5]), 3, "group_norm", "batch", reduce=lambda t: 2 * t)
    assert out.tolist() == pytest.approx([0.5 / math.sqrt(0.2), -0.5 / math.sqrt(0.2), 0.0], abs=1e-6)


def resolved(*argv):
    from rlhfx.algos.rl import resolve_config

    args = parse_args("rlhf", list(argv))
    apply_swift_flags(args)
    return resolve_config(args, args.rlhf_type)


@pytest.mark.parametrize("value, scale", [("group", "group"), ("batch", "batch"), ("none", "none"),
                                          ("true", "group"), ("false", "none")])
def test_scale_rewards_spellings(value, scale):
    assert resolved("--rlhf_type", "grpo", "--scale_rewards", value).scale_rewards == scale
    assert resolved("--rlhf_type", "grpo").scale_rewards == "group"


def test_scale_rewards_for_another_estimator():
    assert resolved("--rlhf_type", "rloo", "--scale_rewards", "none").scale_rewards == "none"  # rloo never divides
    # ms-swift's reinforce_plus_plus example: its batch std is the one reinforce_baseline's whitening divides by
    assert resolved("--rlhf_type", "grpo", "--advantage_estimator", "reinforce_plus_plus",
                    "--scale_rewards", "batch").scale_rewards == "batch"
    with pytest.raises(RlhfxError, match="--scale_rewards batch sets the std that group_norm"):
        resolved("--rlhf_type", "rloo", "--scale_rewards", "batch")


@pytest.mark.parametrize("value, scale", [("batch", "batch"), ("false", "none")])
def test_scale_rewards_reaches_the_estimator(run_cli, monkeypatch, tmp_path, value, scale):
    plugin = tmp_path / "lengths.py"
    plugin.write_text("from rlhfx.rewards.builtin import ORM, orms\n\n\nclass Length(ORM):\n"
                      "    def __call__(self, completions, **kwargs):\n"
                      "        return [float(len(c)) for c in completions]\n\n\norms['length'] = Length\n")
    seen = []
    group_scores = rl_math.group_scores

    def spy(scores, n, estimator, scale="group", reduce=None):
        out = group_scores(scores, n, estimator, scale, reduce)
        seen.append((scores.clone(), estimator, scale, out))
        return out

    monkeypatch.setattr(rl_math, "group_scores", spy)
    code, text = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#8",
                         "--external_plugins", plugin, "--reward_funcs", "length", "--scale_rewards", value,
                         "--max_steps", "1", "--rollout_batch_size", "2", "--num_generations", "4",
                         "--generate_max_len", "8", "--output_dir", tmp_path / "out")
    assert code == 0, text
    scores, estimator, used, out = seen[0]
    assert (estimator, used) == ("group_norm", scale)
    groups = scores.view(-1, 4)
    centred = groups - groups.mean(dim=1, keepdim=True)
    assert centred.abs().sum() > 0  # completions of different lengths: the scaling shows
    expected = centred / (scores.std() + 1e-9) if scale == "batch" else centred
    assert out.tolist() == pytest.approx(expected.reshape(-1).tolist(), abs=1e-5)


def test_move_model_batches_is_noted_not_ignored():
    args = parse_args("rlhf", ["--rlhf_type", "grpo", "--move_model_batches", "4"])
    notes = apply_swift_flags(args)
    assert args.move_model_batches == 4
    assert notes == ["--move_model_batches: rlhfx hands the weights to vLLM tensor by tensor (colocate) or in requests "
                     "of at most 256 MiB (server), never the whole model at once; the batching changes no result."]
