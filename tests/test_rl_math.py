"""The online-RL functions the PPO trainer calls, against ALGORITHMS.md worked by hand on padded tensors (1e-5).

Row 0 has 3 response tokens, row 1 has 2 and one pad (whose inputs hold junk that must not leak in).
"""

import math

import pytest
import torch

from rlhfx.algos import rl_math

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 9.0]])
REF = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -1.2, -7.0]])


def close(actual, expected):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float32),
                          torch.as_tensor(expected, dtype=torch.float32), atol=1e-5), (actual, expected)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_per_token(estimator):
    formula = {"k1": lambda lr: lr, "k2": lambda lr: lr * lr / 2, "k3": lambda lr: math.exp(-lr) - 1 + lr}[estimator]
    expected = [[formula(0.5), formula(-1.0), formula(0.0)], [formula(-0.2), formula(0.0), 0.0]]
    close(rl_math.kl_per_token(LOGP, REF, estimator, MASK), expected)


def test_kl_is_clamped_to_plus_minus_ten():
    logp, ref, mask = torch.tensor([[0.0, 0.0, 30.0]]), torch.tensor([[30.0, 0.0, 0.0]]), torch.ones(1, 3)
    close(rl_math.kl_per_token(logp, ref, "k1", mask), [[-10.0, 0.0, 10.0]])
    close(rl_math.kl_per_token(logp, ref, "k3", mask), [[10.0, 0.0, 10.0]])  # exp(30) - 31 and exp(-30) - 1 + 30 = 29


def test_token_rewards_put_the_clipped_score_on_the_last_real_token():
    kl = torch.tensor([[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]])
    rewards = rl_math.token_rewards(kl, 0.1, torch.tensor([2.0, -7.0]), MASK, clip=5.0)
    close(rewards, [[-0.05, 0.1, 2.0], [0.02, -5.0, 0.0]])


def test_gae_and_returns_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 99.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.3, 77.0]])
    gamma, lam = 0.9, 0.8
    # row 0: deltas 0 + .9*.2 - .5 = -.32, 0 + .9*.4 - .2 = .16, 1 - .4 = .6
    a2 = 0.6
    a1 = 0.16 + gamma * lam * a2
    a0 = -0.32 + gamma * lam * a1
    # row 1 (pad after two tokens): deltas .5 + .9*.3 - 1 = -.23, 2 - .3 = 1.7
    b1 = 1.7
    b0 = -0.23 + gamma * lam * b1
    advantages, returns = rl_math.gae(rewards, values, MASK, gamma, lam)
    close(advantages, [[a0, a1, a2], [b0, b1, 0.0]])
    close(returns, [[a0 + 0.5, a1 + 0.2, a2 + 0.4], [b0 + 1.0, b1 + 0.3, 0.0]])


def test_discounted_returns_with_padding():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 50.0]])
    close(rl_math.discounted_returns(rewards, MASK, 0.5), [[1 + 0.25 * 2, 0.5 * 2, 2.0], [0.5 - 0.5, -1.0, 0.0]])


def test_whiten_over_real_tokens_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 1000.0]])
    mean = (1 + 2 + 3 + 4 + 5) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in (1, 2, 3, 4, 5)) / 5 + 1e-8)
    close(rl_math.whiten(x, MASK), [[(1 - mean) / std, (2 - mean) / std, (3 - mean) / std],
                                     [(4 - mean) / std, (5 - mean) / std, 0.0]])


def test_whiten_without_shifting_the_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 1000.0]])
    std = math.sqrt(2 + 1e-8)  # values 1..5: mean 3, population variance 2
    close(rl_math.whiten(x, MASK, shift_mean=False), [[(1 - 3) / std + 3, (2 - 3) / std + 3, 3.0],
                                                       [(4 - 3) / std + 3, (5 - 3) / std + 3, 0.0]])


def test_gae_estimator_whitens_advantages_and_keeps_raw_returns():
    kl = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.0]])
    advantages, returns = rl_math.advantages_and_returns("gae", torch.tensor([1.0, -1.0]), kl, 0.5, MASK, n=1,
                                                         gamma=1.0, lam=1.0, reward_clip=None, values=values)
    # lam = gamma = 1: A_t = sum_(k>=t) r_k - V_t; rewards row 0: 0, -.5, 1; row 1: -1, -1
    raw = [[0.5 - 0.1, 0.5 - 0.2, 1 - 0.3], [-2 - 0.4, -1 - 0.5, 0.0]]
    close(returns, [[0.5, 0.5, 1.0], [-2.0, -1.0, 0.0]])
    flat = [v for row, m in zip(raw, MASK.tolist()) for v, k in zip(row, m) if k]
    mean = sum(flat) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in flat) / 5 + 1e-8)
    close(advantages, [[(v - mean) / std * k for v, k in zip(row, m)] for row, m in zip(raw, MASK.tolist())])


def test_group_estimators_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0])  # two prompts x 3 samples
    mean_a, mean_b = 0.5, 1 / 3
    std_a = math.sqrt(((0.5) ** 2 + (0.5) ** 2 + 0) / 2)
    std_b = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)
    baseline = [1 - mean_a, 0 - mean_a, 0.5 - mean_a, 1 - mean_b, 0 - mean_b, 0 - mean_b]
    close(rl_math.group_scores(scores, 3, "reinforce_baseline"), baseline)
    close(rl_math.group_scores(scores, 3, "dr_grpo"), baseline)
    close(rl_math.group_scores(scores, 3, "rloo"), [1 - 0.25, 0 - 0.75, 0.5 - 0.5, 1 - 0, 0 - 0.5, 0 - 0.5])
    close(rl_math.group_scores(scores, 3, "group_norm"),
          [(1 - mean_a) / (std_a + 1e-9), (0 - mean_a) / (std_a + 1e-9), 0.0,
           (1 - mean_b) / (std_b + 1e-9), (0 - mean_b) / (std_b + 1e-9), (0 - mean_b) / (std_b + 1e-9)])
    with pytest.raises(ValueError):
        rl_math.group_scores(scores, 1, "rloo")


def test_group_advantages_spread_the_score_over_every_token_with_gamma_one():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    kl = torch.tensor([[0.2, 0.4, 5.0], [0.0, 0.0, 0.0]])
    advantages, returns = rl_math.advantages_and_returns("rloo", torch.tensor([1.0, 0.0]), kl, 0.5, mask, n=2,
                                                         gamma=0.3, lam=0.9, reward_clip=10.0)
    # rloo scores: 1 - 0 = 1, 0 - 1 = -1; token rewards row 0: -.1, -.2 + 1; row 1: 0, 0, -1
    close(returns, [[-0.1 + 0.8, 0.8, 0.0], [-1.0, -1.0, -1.0]])
    close(advantages, returns)  # rloo advantages are not whitened


def test_reinforce_advantages_are_whitened_returns():
    kl = torch.zeros(2, 3)
    advantages, returns = rl_math.advantages_and_returns("reinforce", torch.tensor([1.0, 3.0]), kl, 0.1, MASK, n=1,
                                                         gamma=1.0, lam=1.0, reward_clip=2.0)
    close(returns, [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])  # the score 3 is clipped to 2
    std = math.sqrt((3 * 0.4 ** 2 + 2 * 0.6 ** 2) / 5 + 1e-8)  # mean 7/5
    close(advantages, [[-0.4 / std] * 3, [0.6 / std, 0.6 / std, 0.0]])


def test_policy_loss_clip_and_dual_clip():
    logp = torch.log(torch.tensor([[1.5, 0.9, 4.0], [0.5, 1.0, 7.0]]))
    old = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, -2.0, -1.0], [2.0, 1.0, 5.0]])
    # rho = 1.5, .9, 4 | .5, 1; eps .2: objective min(rho A, clip(rho) A)
    obj = [min(1.5, 1.2), min(-1.8, -1.8), min(-4.0, -1.2), min(1.0, 1.6), 1.0]
    out = rl_math.policy_loss(logp, old, adv, MASK, 0.2, 0.2)
    close(out["loss"], -sum(obj) / 5)
    close(out["clip_ratio"], 1 / 5)  # only token (0, 0): clip(1.5) A = 1.2 < 1.5
    close(out["approx_kl"], sum((r - 1) - math.log(r) for r in (1.5, 0.9, 4.0, 0.5, 1.0)) / 5)
    dual = rl_math.policy_loss(logp, old, adv, MASK, 0.2, 0.2, dual_clip=3.0)
    obj[2] = max(-4.0, 3.0 * -1.0)  # A < 0: the objective is floored at c A
    close(dual["loss"], -sum(obj) / 5)


def test_sapo_soft_gate_replaces_the_clip():
    logp = torch.log(torch.tensor([[1.5, 0.9, 4.0], [0.5, 1.0, 7.0]]))
    adv = torch.tensor([[1.0, -2.0, -1.0], [2.0, 1.0, 5.0]])

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    # tau_pos 1 where A > 0, tau_neg 2 where A < 0: objective = 4 / tau sigmoid(tau (rho - 1)) A
    obj = [4 * sigmoid(0.5) * 1, 2 * sigmoid(-0.2) * -2, 2 * sigmoid(6.0) * -1, 4 * sigmoid(-0.5) * 2, 4 * 0.5 * 1]
    out = rl_math.policy_loss(logp, torch.zeros(2, 3), adv, MASK, 0.2, 0.2, agg="seq-mean-token-mean", sapo=(1.0, 2.0))
    close(out["loss"], -((obj[0] + obj[1] + obj[2]) / 3 + (obj[3] + obj[4]) / 2) / 2)
    close(out["clip_ratio"], 0.0)  # nothing is clipped, though rho = 1.5 and 4 are far outside [0.8, 1.2]
    # on-policy (rho = 1) the gate's slope is 1: the gradient is plain policy gradient's, -A / tokens
    on_policy = torch.zeros(2, 3, requires_grad=True)
    rl_math.policy_loss(on_policy, torch.zeros(2, 3), adv, MASK, 0.2, 0.2, sapo=(1.0, 2.0))["loss"].backward()
    close(on_policy.grad, -adv * MASK / 5)


def test_value_loss_clipped_and_not():
    values = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.1, 50.0]])
    old = torch.tensor([[0.5, 0.0, 1.0], [0.5, 0.3, 0.0]])
    ret = torch.tensor([[1.2, 1.0, 0.0], [0.0, 0.2, 0.0]])
    plain = [(1 - 1.2) ** 2, 1.0, 4.0, 0.25, (0.1 - 0.2) ** 2]
    close(rl_math.value_loss(values, old, ret, MASK, None), 0.5 * sum(plain) / 5)
    # eps .2: clipped V = .7, 0, 1.2 | .5, .1 -> (V_clip - ret)^2 = .25, 1, 1.44 | .25, .01
    clipped = [max(0.04, 0.25), 1.0, max(4.0, 1.44), 0.25, max(0.01, 0.01)]
    close(rl_math.value_loss(values, old, ret, MASK, 0.2), 0.5 * sum(clipped) / 5)


def test_entropy_masked_token_mean():
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]], [[0.0, 0.0], [100.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    h_uniform, h_quarter = math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    close(rl_math.entropy(logits, mask), (2 * h_uniform + h_quarter) / 3)


def test_adaptive_kl_controller_update_is_clipped():
    controller = rl_math.AdaptiveKLController(0.1, target=6.0, horizon=100)
    controller.update(kl=9.0, n=10)  # error .5 clipped to .2
    close(controller.value, 0.1 * (1 + 0.2 * 10 / 100))
    controller.update(kl=5.4, n=10)  # error -.1
    close(controller.value, 0.1 * 1.02 * (1 - 0.1 * 10 / 100))
    fixed = rl_math.AdaptiveKLController(0.1, target=None, horizon=100)
    fixed.update(kl=50.0, n=10)
    assert fixed.value == 0.1


def test_running_moments_normalize():
    moments = rl_math.RunningMoments()
    moments.update([1.0, 2.0])
    moments.update([3.0, 6.0])
    mean, std = 3.0, math.sqrt((4 + 1 + 0 + 9) / 4)
    close(moments.normalize(torch.tensor([6.0])), [(6 - mean) / (std + 1e-8)])


# log-ratios far past exp's float32 range (88.7): the loss and its gradient must stay finite, also where the
# advantage is exactly 0 (an all-equal GRPO group), where inf x 0 would be NaN
EXTREME = torch.tensor([[-100.0, -50.0, 0.0, 50.0, 100.0]])


@pytest.mark.parametrize("advantage", [0.0, 1.0, -1.0])
def test_policy_loss_and_gradient_are_finite_at_extreme_log_ratios(advantage):
    logp = EXTREME.clone().requires_grad_()
    ones = torch.ones_like(EXTREME)
    out = rl_math.policy_loss(logp, torch.zeros_like(EXTREME), advantage * ones, ones, 0.2, 0.2, dual_clip=3.0)
    out["loss"].backward()
    assert all(torch.isfinite(v).all() for v in out.values()) and torch.isfinite(logp.grad).all()
    # log-ratios clamped to [-20, 20]: rho = e^-20, e^-20, 1, e^20, e^20
    small = math.exp(-20)
    expected = {0.0: 0.0, 1.0: -(2 * small + 1 + 1.2 + 1.2) / 5, -1.0: (0.8 + 0.8 + 1 + 3 + 3) / 5}[advantage]
    close(out["loss"], expected)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_loss_gradient_is_finite_at_extreme_log_ratios(estimator):
    logp = EXTREME.clone().requires_grad_()
    ones = torch.ones_like(EXTREME)
    kl = rl_math.kl_per_token(logp, torch.zeros_like(EXTREME), estimator, ones)
    rl_math.masked_mean(kl, ones).backward()  # the trainer's --use_kl_loss term
    assert torch.isfinite(kl).all() and torch.isfinite(logp.grad).all()
    expected = {"k1": [-10.0, -10.0, 0.0, 10.0, 10.0], "k2": [10.0, 10.0, 0.0, 10.0, 10.0],
                "k3": [10.0, 10.0, 0.0, 10.0, 10.0]}[estimator]
    close(kl, [expected])


# --- conventions (docs/algorithms/ppo.md, "Conventions"): each a deliberate choice, pinned here ---

def test_group_estimators_clip_the_raw_reward_before_the_baseline():
    """rlhfx clips each raw reward to [-c, c] and then subtracts the group baseline: rewards 30 and 20 with c = 10
    are both 10, so rloo gives 0 and 0 (OpenRLHF subtracts first and clips the result: +10 and -10)."""
    mask = torch.ones(2, 1)
    _, returns = rl_math.advantages_and_returns("rloo", torch.tensor([30.0, 20.0]), torch.zeros(2, 1), 0.0, mask,
                                                n=2, gamma=1.0, lam=1.0, reward_clip=10.0)
    close(returns, [[0.0], [0.0]])


def test_the_kl_that_target_kl_steers_is_summed_per_sequence():
    """--target_kl compares the mean over sequences of the summed token KL (Ziegler et al., TRL), not OpenRLHF's
    per-token mean: here 1.5 (sums 2 and 1), where the per-token mean would be 0.6."""
    kl = torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.5, 0.0]]) * MASK
    assert rl_math.sequence_kl(kl) == pytest.approx(1.5)


# --- loss aggregation, GSPO, asymmetric clipping: through policy_loss, as the trainer calls it ---

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])  # with ratio 1 and A = -PER_TOKEN the loss is PER_TOKEN


@pytest.mark.parametrize("mode, expected, expected_with_batch_totals", [
    ("token-mean", 15 / 5, 15 / 10),  # every token weighs the same
    ("seq-mean-token-mean", (2 + 4.5) / 2, (2 + 4.5) / 4),  # every sequence weighs the same
    ("seq-mean-token-sum", (6 + 9) / 2, (6 + 9) / 4),  # Dr. GRPO: longer sequences weigh more
])
def test_loss_aggregation_modes(mode, expected, expected_with_batch_totals):
    zeros = torch.zeros(2, 3)
    close(rl_math.policy_loss(zeros, zeros, -PER_TOKEN, MASK, 0.2, 0.2, agg=mode)["loss"], expected)
    # a micro batch of an optimizer batch with 10 tokens in 4 sequences: its share of that batch's loss
    out = rl_math.policy_loss(zeros, zeros, -PER_TOKEN, MASK, 0.2, 0.2, agg=mode, n_tokens=10.0, n_sequences=4.0)
    close(out["loss"], expected_with_batch_totals)


def test_sequences_with_no_token_left_do_not_count():
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # row 1 filtered out (--overlong_filter)
    close(rl_math.aggregate(PER_TOKEN, mask, "seq-mean-token-mean"), 2.0)
    close(rl_math.aggregate(PER_TOKEN, mask, "token-mean"), 2.0)


GSPO_LOGP = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 50.0]])  # old log-probs 0; row 1's pad holds junk
GSPO_ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])


def test_gspo_uses_one_ratio_per_sequence():
    s0, s1 = math.exp(0.2), math.exp(-0.4)  # exp of each row's mean log-ratio over its real tokens
    zeros = torch.zeros(2, 3)
    gspo = rl_math.policy_loss(GSPO_LOGP, zeros, GSPO_ADV, MASK, 0.2, 0.2, level="sequence", agg="seq-mean-token-mean")
    # row 0: min(s0, 1.2) = 1.2; row 1: min(-s1, -0.8) = -0.8; loss = mean over rows of -objective
    assert s0 > 1.2 and s1 < 0.8
    close(gspo["loss"], (-1.2 + 0.8) / 2)
    close(gspo["clip_ratio"], 1.0)  # every token's (sequence) ratio was clipped
    ppo = rl_math.policy_loss(GSPO_LOGP, zeros, GSPO_ADV, MASK, 0.2, 0.2, agg="seq-mean-token-mean")
    token = [min(math.exp(0.1), 1.2), 1.2, 1.2]  # the token ratios clip differently
    close(ppo["loss"], (-sum(token) / 3 + 0.8) / 2)


def test_gspo_gradient_weighs_every_token_of_a_sequence_the_same():
    logp = GSPO_LOGP.clone().requires_grad_()
    out = rl_math.policy_loss(logp, torch.zeros(2, 3), GSPO_ADV, MASK, 0.5, 0.5, level="sequence",
                              agg="seq-mean-token-mean")
    out["loss"].backward()
    # eps .5, nothing clipped (s0 = 1.22, s1 = 0.67): d/d logp_t of -(1/2) s0 A is -(1/2) s0 / 3 on each of row 0's
    # 3 tokens, of -(1/2) s1 (-1) it is (1/2) s1 / 2 on each of row 1's 2; the pad gets 0
    s0, s1 = math.exp(0.2), math.exp(-0.4)
    close(logp.grad, [[-s0 / 6] * 3, [s1 / 4, s1 / 4, 0.0]])


def test_asymmetric_clipping():
    logp = torch.log(torch.tensor([[1.25, 0.7, 1.0]]))
    adv, mask = torch.tensor([[1.0, -1.0, 0.0]]), torch.ones(1, 3)
    # eps_high .28: rho 1.25 is inside [.8, 1.28] -> 1.25 A; eps_low .2: rho .7 clips to .8 -> min(-.7, -.8) = -.8
    close(rl_math.policy_loss(logp, torch.zeros(1, 3), adv, mask, 0.2, 0.28)["loss"], -(1.25 - 0.8) / 3)
    close(rl_math.policy_loss(logp, torch.zeros(1, 3), adv, mask, 0.2, 0.2)["loss"], -(1.2 - 0.8) / 3)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_both_ratio_levels_are_finite_at_extreme_log_ratios(level):
    logp = EXTREME.clone().requires_grad_()
    ones = torch.ones_like(EXTREME)
    out = rl_math.policy_loss(logp, torch.zeros_like(EXTREME), torch.zeros_like(EXTREME), ones, 0.2, 0.2,
                              level=level, agg="seq-mean-token-mean")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(logp.grad).all()
    logp = (100 * ones).requires_grad_()  # a sequence whose mean log-ratio is 100
    out = rl_math.policy_loss(logp, torch.zeros_like(EXTREME), ones, ones, 0.2, 0.2, level=level)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(logp.grad).all()


def test_overlong_penalty_by_hand():
    # max 16 tokens, buffer 4: no penalty up to 12, then -(length - 12) / 4 * factor, -factor at 16
    lengths = torch.tensor([5, 12, 13, 15, 16])
    close(rl_math.overlong_penalty(lengths, 16, 4, 0.5), [0.0, 0.0, -0.125, -0.375, -0.5])


def test_varied_groups_are_those_whose_rewards_differ():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])  # four prompts x 2 samples
    assert rl_math.varied_groups(scores, 2).tolist() == [False, True, False, False]


def test_rollout_correction_tis_and_icepop_by_hand():
    old = torch.log(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    rollout = torch.log(torch.tensor([[0.5, 4.0, 1.0], [1.0 / 8, 1.25, 9.0]]))  # r = old / rollout: 2, .25, 1 | 8, .8
    weights, stats = rl_math.rollout_correction(old, rollout, MASK, "tis", 0.5, 5.0)
    close(weights, [[2.0, 0.5, 1.0], [5.0, 0.8, 0.0]])  # clamped to [.5, 5]; the pad is 0
    weights, stats = rl_math.rollout_correction(old, rollout, MASK, "icepop", 0.5, 5.0)
    close(weights, [[2.0, 0.0, 1.0], [0.0, 0.8, 0.0]])  # outside [.5, 5]: dropped
    assert stats["is_masked"] == pytest.approx(2 / 5)
    assert stats["rollout_kl"] == pytest.approx((math.log(0.5) + math.log(4) + 0 + math.log(1 / 8) + math.log(1.25)) / 5)
    # the weights multiply the per-token loss: A = 1, ratio 1 everywhere -> loss = -mean(weights)
    ones = torch.ones(2, 3)
    out = rl_math.policy_loss(old, old, ones, MASK, 0.2, 0.2, weights=weights)
    close(out["loss"], -(2.0 + 1.0 + 0.8) / 5)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_unbiased_kl_gradient_keeps_the_value_and_takes_w_lr(estimator):
    logp = LOGP.clone().requires_grad_()
    old = LOGP - torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.0, 5.0]])  # w = pi / pi_old = e^.1, e^-.2, 1 | e^.3, 1
    kl = rl_math.kl_per_token(logp, REF, estimator, MASK, old_logp=old)
    close(kl, rl_math.kl_per_token(LOGP, REF, estimator, MASK))  # the value is the estimator's
    kl.sum().backward()
    lr = [[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]]  # logp - ref, the pad 0
    w = [[math.exp(0.1), math.exp(-0.2), 1.0], [math.exp(0.3), 1.0, 0.0]]
    close(logp.grad, [[wi * li for wi, li in zip(wr, lrow)] for wr, lrow in zip(w, lr)])


# --- ms-swift's --loss_type fipo and real, worked by hand in float64 (1e-6) ---

E = math.exp
# token log-ratios log(pi / pi_old): row 0 (A = +1) has 3 tokens, row 1 (A = -1) has 2 and a pad of junk
FIPO_LOG_RATIO = torch.tensor([[0.2, -0.5, 0.3], [0.1, 1.5, 7.0]], dtype=torch.float64)
FIPO_ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
FIPO_MASK = MASK.double()
KNOBS = {"decay_rate": 1.0, "clip_range": 0.2, "clip_high_only": True, "safety_threshold": 4.0}  # gamma = 1/2


def near(actual, expected):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64),
                          atol=1e-6, rtol=0), (actual, expected)


def fipo_loss(**changes):
    return rl_math.policy_loss(FIPO_LOG_RATIO, torch.zeros_like(FIPO_LOG_RATIO), FIPO_ADV, FIPO_MASK, 0.2, 0.2,
                               changes.pop("dual_clip", None), fipo={**KNOBS, **changes})


def test_fipo_weighs_each_token_by_its_clipped_future_kl():
    # future KL F_t = sum_(s>=t) (1/2)^(s-t) log rho_s: row 0 .3, -.5 + .15 = -.35, .2 - .175 = .025 (from the end);
    # row 1: 1.5, .1 + .75 = .85
    # w = exp(F) clipped to [1, 1.2]; row 1's second token (A < 0, rho = e^1.5 = 4.48 > 4) is held in [0.8, 1]
    weights = [[E(0.025), 1.0, 1.2], [1.2, 1.0, 0.0]]
    # the PPO loss per token: -min(rho A, clip(rho, .8, 1.2) A): row 0 -1.2, -e^-.5, -1.2; row 1 e^.1, e^1.5
    ppo = [[-1.2, -E(-0.5), -1.2], [E(0.1), E(1.5)]]
    weight, stats = rl_math.fipo_weights(FIPO_LOG_RATIO, FIPO_LOG_RATIO.exp(), FIPO_ADV, FIPO_MASK, **KNOBS)
    near(weight * FIPO_MASK, weights)
    near(stats["fipo_future_kl_mean"], (0.025 - 0.35 + 0.3 + 0.85 + 1.5) / 5)
    near(stats["fipo_influence_weight_mean"], (E(0.025) + 1 + 1.2 + 1.2 + 1) / 5)
    near(stats["fipo_safety_keep_ratio"], 4 / 5)
    out = fipo_loss()
    per_token = [ppo[0][0] * E(0.025), ppo[0][1] * 1.0, ppo[0][2] * 1.2, ppo[1][0] * 1.2, ppo[1][1] * 1.0]
    near(out["loss"], sum(per_token) / 5)  # token-mean, as ms-swift's fipo


def test_fipo_two_sided_clip_and_the_dual_clip_delta():
    """--fipo_clip_high_only false clips w to [0.8, 1.2]; --delta 3 (the dual clip) leaves row 1's second token
    (rho 4.48 > 3) out of every future KL and floors its objective at 3 A."""
    out = fipo_loss(clip_high_only=False, dual_clip=3.0)
    # row 0 as before but w(-.35) = max(e^-.35, .8) = .8; row 1: F = .1 (1.5 left out), 0 -> w = e^.1, then 1
    weights = [E(0.025), 0.8, 1.2, E(0.1), 1.0]
    per_token = [-1.2, -E(-0.5), -1.2, E(0.1), 3.0]
    near(out["loss"], sum(w * p for w, p in zip(weights, per_token)) / 5)
    near(out["fipo_future_kl_mean"], (0.025 - 0.35 + 0.3 + 0.1 + 0.0) / 5)
    # without the weights it is the plain (dual-clipped) PPO loss, which differs
    plain = rl_math.policy_loss(FIPO_LOG_RATIO, torch.zeros_like(FIPO_LOG_RATIO), FIPO_ADV, FIPO_MASK, 0.2, 0.2, 3.0)
    near(plain["loss"], sum(per_token) / 5)
    assert abs(plain["loss"] - out["loss"]) > 1e-3


def test_fipo_weight_is_not_differentiated():
    logp = FIPO_LOG_RATIO.clone().requires_grad_()
    rl_math.policy_loss(logp, torch.zeros_like(logp), FIPO_ADV, FIPO_MASK, 0.2, 0.2, fipo=KNOBS)["loss"].backward()
    # where the unclipped term is the min, d/dlogp = -w A rho / 5 with w a constant: row 0's second token (w 1) and
    # row 1's tokens (A -1: rho e^.1 inside the clip, w 1.2; rho e^1.5 above it, PPO's min keeps rho, w 1)
    near(logp.grad, [[0.0, -E(-0.5) / 5, 0.0], [1.2 * E(0.1) / 5, E(1.5) / 5, 0.0]])


# REAL: 4 samples in 2 groups of 2; token log-ratios (old log-probs 0) with sample means .3, -.2 | .2, .6
REAL_LOGP = torch.tensor([[0.2, 0.4], [-0.2, 5.0], [0.1, 0.3], [0.5, 0.7]], dtype=torch.float64)
REAL_MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
REAL_ADV = torch.tensor([1.0, -1.0, -0.5, 0.0], dtype=torch.float64)[:, None].expand(4, 2)


def test_real_classifies_each_group_by_the_sign_of_the_advantage():
    logp = REAL_LOGP.clone().requires_grad_()
    loss = rl_math.real_loss(logp, torch.zeros_like(logp), REAL_ADV, REAL_MASK, n=2, tau=0.5)
    # group 0: positive s = .3 / .5 = .6, negative s = -.2 / .5 = -.4: log(1 + e^-.6) + log(1 + e^-.4);
    # group 1 has no positive sample (A <= 0 is negative): it adds 0; the sum is over the 2 groups
    near(loss, (math.log(1 + E(-0.6)) + math.log(1 + E(-0.4))) / 2)
    loss.backward()
    # d/d logp_t = dL/ds / tau / tokens / groups: positive -sigmoid(-.6), negative +sigmoid(-.4)
    pos, neg = -1 / (1 + E(0.6)) / 0.5 / 2 / 2, 1 / (1 + E(0.4)) / 0.5 / 1 / 2
    near(logp.grad * REAL_MASK, [[pos, pos], [neg, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # one micro batch of an optimizer batch of 4 groups: its share
    near(rl_math.real_loss(REAL_LOGP, torch.zeros_like(REAL_LOGP), REAL_ADV, REAL_MASK, 2, 0.5, n_groups=4.0),
         (math.log(1 + E(-0.6)) + math.log(1 + E(-0.4))) / 4)


def test_real_without_a_mixed_group_is_zero_with_a_gradient_graph():
    logp = REAL_LOGP.clone().requires_grad_()
    loss = rl_math.real_loss(logp, torch.zeros_like(logp), -REAL_ADV.abs(), REAL_MASK, 2, 0.5)
    loss.backward()
    assert loss.item() == 0.0 and not logp.grad.any()
