"""ms-swift's built-in rewards (--reward_funcs) and --external_plugins, against hand-computed values."""

import pytest

from rlhfx.algos.rl import resolve_config
from rlhfx.arguments import parse_args
from rlhfx.errors import RlhfxError
from rlhfx.rewards import builtin
from rlhfx.rewards.builtin import NamedReward, load_plugins
from rlhfx.rewards.sources import Sample


def grpo_args(*argv):
    return parse_args("rlhf", ["--rlhf_type", "grpo", *argv])


def samples(completions, labels=None, lengths=None):
    labels = labels or [None] * len(completions)
    lengths = lengths or [1] * len(completions)
    return [Sample([{"role": "user", "content": "q"}], "PROMPT ", c, label, [5] * n)
            for c, label, n in zip(completions, labels, lengths)]


def reward(name, completions, labels=None, lengths=None, *argv):
    """The named reward as online RL builds it: with the run's resolved options (rlhfx.algos.options.RLOptions)."""
    config = resolve_config(grpo_args("--reward_funcs", name, *argv), "grpo")
    return NamedReward(name, config)(samples(completions, labels, lengths))


def test_accuracy_compares_the_final_answer_with_the_solution():
    completions = ["<think>3 plus 4</think><answer>7</answer>",  # <answer> tag
                   "so the result is \\boxed{12}.",  # last \boxed{}
                   "3 + 4 = 7",  # last number
                   "3 + 4 = 8",  # wrong last number
                   "<answer>1,000</answer>",  # numbers compare by value
                   "\\boxed{\\frac{1}{2}}",  # non-numbers compare as text
                   "I do not know",  # no answer at all
                   "<answer>7</answer> and then 9"]  # the tag wins over a later number
    labels = ["7", "12", "7", "7", "1000", "\\frac{1}{2}", "7", "<answer>7</answer>"]
    assert reward("accuracy", completions, labels) == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_accuracy_without_a_solution_is_a_clear_error():
    with pytest.raises(RlhfxError, match="reference answer"):
        reward("accuracy", ["7"], [None])


def test_format_wants_think_then_answer_and_nothing_else():
    completions = ["<think>a</think>\n<answer>7</answer>", "<think>a</think><answer>7</answer> extra",
                   "<answer>7</answer>", "<think>\nmulti\nline\n</think> <answer>x</answer>"]
    assert reward("format", completions) == [1.0, 0.0, 0.0, 1.0]


def test_cosine_scales_by_length_and_correctness():
    # L = 10; correct: 1.0 at length 0 -> 0.5 at 10; wrong: -0.5 at 0 -> 0.0 at 10; half way: the midpoint
    completions = ["<answer>7</answer>"] * 3 + ["<answer>8</answer>"] * 3
    got = reward("cosine", completions, ["7"] * 6, [0, 5, 10, 0, 5, 10], "--cosine_max_len", "10")
    assert got == pytest.approx([1.0, 0.75, 0.5, -0.5, -0.25, 0.0])


def test_cosine_length_defaults_to_max_completion_length():
    got = reward("cosine", ["<answer>7</answer>"], ["7"], [5], "--max_completion_length", "10")
    assert got == pytest.approx([0.75])


def test_repetition_penalises_repeated_ngrams():
    # "a b a b a b": 4 word trigrams, 2 distinct -> (1 - 2/4) * -1 = -0.5; all distinct -> 0; shorter than n -> 0
    assert reward("repetition", ["a b a b a b", "a b c d", "a b"]) == pytest.approx([-0.5, 0.0, 0.0])
    # bigrams of "x x x x": 3, 1 distinct -> (1 - 1/3) * -2
    assert reward("repetition", ["x x x x"], None, None, "--repetition_n_grams", "2",
                  "--repetition_max_penalty", "-2") == pytest.approx([-4 / 3])


def test_soft_overlong_penalises_the_last_cache_tokens_linearly():
    # L_max 20, L_cache 5: no penalty up to 15 tokens, then -1/5 per token down to -1 at 20
    got = reward("soft_overlong", ["x"] * 4, None, [10, 15, 18, 20], "--soft_max_length", "20",
                 "--soft_cache_length", "5")
    assert got == pytest.approx([0.0, 0.0, -0.6, -1.0])


def test_soft_overlong_needs_a_cache_length():
    with pytest.raises(RlhfxError, match="--soft_cache_length"):
        reward("soft_overlong", ["x"])


def test_unknown_name_suggests_the_closest():
    with pytest.raises(RlhfxError, match="did you mean 'accuracy'"):
        reward("acuracy", ["x"])


def test_external_plugin_registers_named_rewards(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "orms", dict(builtin.orms))  # the plugin's names stay in this test
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "from rlhfx.rewards.builtin import ORM, orms\n"
        "class Long(ORM):\n"
        "    def __call__(self, completions, solution, **kwargs):\n"
        "        return [len(c) * self.args.repetition_n_grams + (s == 'x') for c, s in zip(completions, solution)]\n"
        "orms['long'] = Long\n"
        "orms['tokens'] = lambda completions, response_token_ids, **kwargs: [len(t) for t in response_token_ids]\n")
    load_plugins([str(plugin)])
    assert reward("long", ["ab", "abc"], ["x", "y"]) == [7.0, 9.0]  # 2 * 3 + 1, 3 * 3 + 0
    assert reward("tokens", ["ab", "abc"], None, [4, 2]) == [4.0, 2.0]


def test_broken_plugin_is_a_clear_error(tmp_path):
    plugin = tmp_path / "bad.py"
    plugin.write_text("import not_a_module_anywhere\n")
    with pytest.raises(RlhfxError, match="Importing --external_plugins file .*bad.py failed: ModuleNotFoundError"):
        load_plugins([str(plugin)])
    with pytest.raises(RlhfxError, match="does not exist"):
        load_plugins([str(tmp_path / "missing.py")])
