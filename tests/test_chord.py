"""CHORD's mu schedule (rlhfx/algos/rl/chord.py) against hand-computed values: ms-swift's linear warmup to the peak,
then a half cosine from the peak to the valley, then the valley."""

import math

import pytest

from rlhfx.algos.rl.chord import mu_schedule


@pytest.mark.parametrize("step, mu", [
    (0, 0.0), (1, 0.225), (2, 0.45),  # warmup over 4 steps to 0.9: 0.9 * step / 4
    (4, 0.9),  # the peak: the cosine starts at 1
    (9, 0.5),  # halfway through the 10 decay steps: 0.1 + 0.8 * (1 + cos(pi / 2)) / 2
    (6, 0.1 + 0.8 * (1 + math.cos(math.pi / 5)) / 2),
    (14, 0.1), (100, 0.1),  # the valley, kept
])
def test_mu_warms_up_then_decays_along_a_half_cosine(step, mu):
    assert mu_schedule(step, 4, 10, 0.9, 0.1) == pytest.approx(mu, abs=1e-12)


def test_ms_swift_example_schedule_and_a_constant_mu():
    """examples/train/grpo/internal/chord.sh: no warmup, 200 decay steps, 0.9 -> 0.05."""
    assert [mu_schedule(s, 0, 200, 0.9, 0.05) for s in (0, 100, 200)] == pytest.approx([0.9, 0.475, 0.05])
    assert mu_schedule(50, 0, 200, 0.9, 0.05) == pytest.approx(0.05 + 0.85 * (1 + math.sqrt(0.5)) / 2)
    assert [mu_schedule(s, 0, 5, 0.3, 0.3) for s in range(10)] == pytest.approx([0.3] * 10)
    assert mu_schedule(0, 0, 0, 0.9, 0.05) == 0.05  # no decay steps: the valley from the start
