"""Every online RL flag (ppo and its presets grpo, rloo, reinforce_pp) that changes the math, changed through the
`rlhfx rlhf` parse path, changes what shared/docs/ALGORITHMS.md "Online RL" (or the flag's help) says it changes.

Each case parses its flags as `rlhfx rlhf` does (parse_args, the ms-swift spellings, the flags-apply check, the
algorithm's options with their checks), builds the trainer's own rollout and update stages from those options on
the tiny model with a perturbed reference, feeds them a fixed rollout (2 prompts x 4 responses with fixed rewards)
and compares the advantages, returns and loss terms with a recomputation here from plain forward passes and the
doc's formulas (to 1e-4). Each case also checks that the flag's default gives a different number, so a flag the
trainer ignores fails. The adaptive KL controller and --prompt_max_len are read by the loop itself: one 2-step
`rlhfx rlhf` run checks both.
"""

import copy
import functools
import json
import math
from contextlib import nullcontext

import pytest
import torch
from cli_inprocess import run_cli  # noqa: F401 (fixture)
from rl_update_worker import CHORD, EXPERT_ROWS, fixed_groups

from rlhfx.registry.tiny import tiny_model_path

TOLERANCE = 1e-4
PROMPTS = [[5, 6, 7], [8, 9]]
RESPONSES = [[[10, 11], [12, 13, 14, 15], [16], [17, 18, 19]], [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29, 30]]]
REWARDS = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.25]  # fixed_groups' rewards, flattened


def options(name: str, *argv):
    """(args, validated options) exactly as `rlhfx rlhf --rlhf_type NAME ARGV` builds them before any model loads."""
    from rlhfx.algos import get_algo
    from rlhfx.arguments import parse_args
    from rlhfx.commands.rlhf import check_flags_apply
    from rlhfx.training.swift_flags import apply_swift_flags

    args = parse_args("rlhf", ["--rlhf_type", name, "--reward_func", "demo", *map(str, argv)])
    apply_swift_flags(args)
    check_flags_apply(args)
    return args, get_algo(name).build_options(args)


class World:
    """The tiny policy, a perturbed reference and a critic whose score head is not zero (so values matter)."""

    def __init__(self):
        from rlhfx.models import load_causal_lm

        path = str(tiny_model_path())
        self.policy = load_causal_lm(path, "float32").eval()
        self.ref = copy.deepcopy(self.policy)
        self.critic = load_causal_lm(path, "float32", "sequence_classification").eval()
        torch.manual_seed(1)
        with torch.no_grad():
            for p in self.ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
            self.critic.score.weight.copy_(0.05 * torch.randn_like(self.critic.score.weight))

    @torch.no_grad()
    def logits(self, model, prompt, response, temperature=1.0) -> torch.Tensor:
        """[len(response), vocab] logits / temperature that predict each response token, one unpadded sequence."""
        ids = torch.tensor([prompt + response])
        return model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) + len(response) - 1].double() / temperature

    @functools.cache
    def logp(self, model, temperature=1.0) -> list[torch.Tensor]:
        """Per sample: the log-probs of its response tokens."""
        out = []
        for prompt, responses in zip(PROMPTS, RESPONSES):
            for response in responses:
                logp = torch.log_softmax(self.logits(model, prompt, response, temperature), -1)
                out.append(logp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1))
        return out

    @functools.cache
    def entropy(self, temperature=1.0) -> list[torch.Tensor]:
        out = []
        for prompt, responses in zip(PROMPTS, RESPONSES):
            for response in responses:
                logp = torch.log_softmax(self.logits(self.policy, prompt, response, temperature), -1)
                out.append(-(logp.exp() * logp).sum(-1))
        return out

    @functools.cache
    @torch.no_grad()
    def values(self) -> list[torch.Tensor]:
        """V_t: the critic's score head on the hidden state before response token t."""
        out = []
        for prompt, responses in zip(PROMPTS, RESPONSES):
            for response in responses:
                hidden = self.critic.model(input_ids=torch.tensor([prompt + response])).last_hidden_state[0]
                out.append(self.critic.score(hidden[len(prompt) - 1 : len(prompt) + len(response) - 1]).squeeze(-1)
                           .double())
        return out


@pytest.fixture(scope="module")
def world():
    return World()


class Stages:
    """The trainer's rollout and update stages built from parsed options, on copies of the world's models."""

    def __init__(self, world, name, *argv):
        from accelerate import Accelerator

        from rlhfx.algos import rl_math
        from rlhfx.algos.rl.batch import ActorCritic
        from rlhfx.algos.rl.chord import Chord
        from rlhfx.algos.rl.dist import Ranks
        from rlhfx.algos.rl.rollout import RolloutStage
        from rlhfx.algos.rl.update import UpdateStage

        self.args, self.config = args, config = options(name, *argv)
        policy = copy.deepcopy(world.policy)
        critic = copy.deepcopy(world.critic) if config.uses_critic else None
        self.kl = rl_math.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
        actor_critic = ActorCritic(policy, critic)
        chord = Chord(config, EXPERT_ROWS, 0, args.seed, Ranks()) if config.chord_sft_dataset else None
        self.update = UpdateStage(Accelerator(cpu=True), Ranks(), actor_critic, config, args, 1e-3, 1e-3, 10, self.kl,
                                  nullcontext, ".", chord)
        self.rollout = RolloutStage(args, config, None, None, actor_critic, world.ref, Ranks(), 0, nullcontext, self.kl,
                                    rl_math.RunningMoments())

    def batch(self) -> dict:
        return self.rollout.experience(fixed_groups(), 0)[0]

    def loss(self, batch: dict) -> tuple[float, dict]:
        mask = batch["mask"]
        counts = {"n_tokens": mask.sum(), "n_sequences": (mask.sum(1) > 0).sum().float()}
        with torch.no_grad():
            losses, stats = self.update.loss(batch, counts)  # the policy's loss, then the critic's (gae)
        return sum(losses).item(), stats


def rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """A [samples, length] per-token tensor as its rows' real tokens (fixed_groups' response lengths)."""
    lengths = [len(r) for rs in RESPONSES for r in rs]
    return [tensor[i, :n].double() for i, n in enumerate(lengths)]


def close(got: list[torch.Tensor] | float, want: list[torch.Tensor] | float) -> bool:
    if isinstance(got, float):
        return abs(got - want) < TOLERANCE
    return all(torch.allclose(g.double(), w, atol=TOLERANCE) for g, w in zip(got, want))


def token_mean(per_token: list[torch.Tensor]) -> float:
    return (sum(t.sum() for t in per_token) / sum(len(t) for t in per_token)).item()


def whiten(per_token: list[torch.Tensor], shift_mean=True) -> list[torch.Tensor]:
    flat = torch.cat(per_token)
    mean, var = flat.mean(), flat.var(unbiased=False)
    return [(t - mean) / math.sqrt(var + 1e-8) + (0 if shift_mean else mean) for t in per_token]


def kl_estimate(lr: torch.Tensor, estimator: str) -> torch.Tensor:
    """ALGORITHMS.md: lr = logp - logref; k1 = lr, k2 = lr^2/2, k3 = exp(-lr) - 1 + lr."""
    return {"k1": lr, "k2": lr ** 2 / 2, "k3": torch.exp(-lr) - 1 + lr}[estimator]


# ---------------------------------------------------------------- sampling: temperature, top_k, top_p


@pytest.mark.parametrize("argv, temperature", [([], 1.0), (["--temperature", "0.7"], 0.7)])
def test_temperature_is_the_distribution_of_the_log_probs(world, argv, temperature):
    batch = Stages(world, "grpo", *argv).batch()
    assert close(rows(batch["old_logp"]), world.logp(world.policy, temperature))
    assert close(rows(batch["ref_logp"]), world.logp(world.ref, temperature))
    if temperature != 1.0:
        assert not close(rows(batch["old_logp"]), world.logp(world.policy, 1.0))


def test_top_k_and_top_p_reach_the_rollout_sampling(world):
    stages = Stages(world, "grpo", "--top_k", "5", "--top_p", "0.9", "--temperature", "0.8", "--generate_max_len", "7")
    sampling = stages.rollout.sampling
    assert (sampling.top_k, sampling.top_p, sampling.temperature, sampling.max_new_tokens, sampling.n) == (5, 0.9, 0.8, 7, 4)
    assert Stages(world, "grpo", "--top_k", "-1").rollout.sampling.top_k == 0  # the help's "-1 = off"
    assert Stages(world, "grpo").rollout.sampling.top_k == 0


def test_top_k_one_samples_the_most_likely_token(world):
    """--top_k reaches generation: with k = 1 every sample is the greedy answer, whatever the temperature."""
    from rlhfx.engines.pt import PtEngine

    stages = Stages(world, "grpo", "--top_k", "1", "--temperature", "1.5", "--generate_max_len", "6")
    from transformers import AutoTokenizer

    engine = PtEngine(world.policy, AutoTokenizer.from_pretrained(tiny_model_path()), stop_ids=[0], batch_size=4)
    torch.manual_seed(0)
    sampled = engine.generate([PROMPTS[0]], stages.rollout.sampling)[0]
    greedy = world.policy.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=6, do_sample=False)[0, 3:].tolist()
    assert all(c.token_ids == greedy[: len(c.token_ids)] for c in sampled)
    torch.manual_seed(0)
    varied = engine.generate([PROMPTS[0]], Stages(world, "grpo", "--temperature", "1.5", "--generate_max_len", "6")
                             .rollout.sampling)[0]
    assert any(c.token_ids != greedy[: len(c.token_ids)] for c in varied)


# ---------------------------------------------------------------- the KL term: coefficient, estimator, where it goes


@pytest.mark.parametrize("argv, coef, estimator", [
    ([], 0.04, "k3"),  # grpo's defaults
    (["--beta", "0.3", "--kl_estimator", "k1"], 0.3, "k1"),  # ms-swift's name of --kl_coef
    (["--init_kl_coef", "0.2", "--kl_estimator", "k2"], 0.2, "k2"),  # OpenRLHF's
    (["--kl_coef", "0.5"], 0.5, "k3"),
])
def test_kl_loss_term_is_coef_times_the_estimator_token_mean(world, argv, coef, estimator):
    stages = Stages(world, "grpo", *argv)
    loss, stats = stages.loss(stages.batch())
    lr = [p - r for p, r in zip(world.logp(world.policy), world.logp(world.ref))]
    kl = token_mean([kl_estimate(x, estimator) for x in lr])
    assert close(stats["kl_loss"], kl)
    assert close(loss - stats["policy_loss"], coef * kl)
    assert not close(coef * kl, 0.04 * token_mean([kl_estimate(x, "k3") for x in lr])) or not argv


@pytest.mark.parametrize("argv", [
    ["--kl_coef", "0.1", "--gamma", "0.9", "--reward_clip_range", "0.6"],
    ["--kl_coef", "0.1", "--kl_estimator", "k2", "--normalize_reward"],
    [],
])
def test_reinforce_returns_discount_the_kl_penalised_token_rewards(world, argv):
    """reinforce_pp: r_t = -kl_coef kl_t + [last] clip(R, -c, c); returns_t = sum_k gamma^(k-t) r_k; A = whiten."""
    stages = Stages(world, "reinforce_pp", *argv)
    config = stages.config
    batch = stages.batch()
    lr = [p - r for p, r in zip(world.logp(world.policy), world.logp(world.ref))]
    scores = torch.tensor(REWARDS, dtype=torch.float64)
    if config.normalize_reward:  # the running moments of the first rollout: its mean and population std
        scores = (scores - scores.mean()) / (scores.std(unbiased=False) + 1e-8)
    returns = []
    for x, score in zip(lr, scores.clamp(-config.reward_clip_range, config.reward_clip_range)):
        r = -config.kl_coef * kl_estimate(x, config.kl_estimator)
        r[-1] += score
        returns.append(torch.tensor([sum(config.gamma ** (k - t) * r[k] for k in range(t, len(r)))
                                     for t in range(len(r))], dtype=torch.float64))
    assert close(rows(batch["returns"]), returns)
    assert close(rows(batch["advantages"]), whiten(returns))
    default = Stages(world, "reinforce_pp").batch()
    assert not argv or not close(rows(default["returns"]), returns)


def test_kl_in_reward_moves_the_kl_from_the_loss_into_the_rewards(world):
    stages = Stages(world, "grpo", "--kl_in_reward", "true", "--kl_coef", "0.5")
    batch = stages.batch()
    loss, stats = stages.loss(batch)
    assert "kl_loss" not in stats and close(loss, stats["policy_loss"])
    lr = [p - r for p, r in zip(world.logp(world.policy), world.logp(world.ref))]
    scores = torch.tensor(REWARDS, dtype=torch.float64).view(2, 4)
    group = ((scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-9)).reshape(-1)
    returns = []
    for x, score in zip(lr, group):  # gamma 1: each token's return is the rest of the rewards
        r = -0.5 * kl_estimate(x, "k3")
        r[-1] += score
        returns.append(r.flip(0).cumsum(0).flip(0))
    assert close(rows(batch["returns"]), returns)


# ---------------------------------------------------------------- advantage estimators


def group_advantages(estimator: str, n: int) -> torch.Tensor:
    """ALGORITHMS.md's group scores of REWARDS in consecutive groups of n."""
    groups = torch.tensor(REWARDS, dtype=torch.float64).view(-1, n)
    mean = groups.mean(1, keepdim=True)
    out = {"group_norm": (groups - mean) / (groups.std(1, keepdim=True) + 1e-9),
           "rloo": groups - (groups.sum(1, keepdim=True) - groups) / (n - 1),
           "dr_grpo": groups - mean, "reinforce_baseline": groups - mean}[estimator]
    return out.reshape(-1)


@pytest.mark.parametrize("name, argv, estimator, n", [
    ("grpo", [], "group_norm", 4),
    ("grpo", ["--num_generations", "2"], "group_norm", 2),
    ("grpo", ["--advantage_estimator", "dr_grpo"], "dr_grpo", 4),
    ("grpo", ["--advantage_estimator", "rloo"], "rloo", 4),
    ("rloo", [], "rloo", 4),
    ("grpo", ["--advantage_estimator", "reinforce_plus_plus"], "reinforce_baseline", 4),  # ms-swift's name
    ("ppo", ["--advantage_estimator", "grpo", "--n_samples_per_prompt", "4"], "group_norm", 4),  # ms-swift's name
])
def test_group_estimators_score_each_sample_against_its_group(world, name, argv, estimator, n):
    stages = Stages(world, name, *argv, "--kl_coef", "0")
    batch = stages.batch()
    scores = group_advantages(estimator, n)
    lengths = [len(r) for rs in RESPONSES for r in rs]
    per_token = [torch.full((length,), s.item(), dtype=torch.float64) for s, length in zip(scores, lengths)]
    want = whiten(per_token) if estimator == "reinforce_baseline" else per_token
    assert close(rows(batch["advantages"]), want)
    other = group_advantages("rloo" if estimator != "rloo" else "group_norm", 4)
    assert not torch.allclose(scores, other)
    if n != 4:
        assert not torch.allclose(scores, group_advantages(estimator, 4))


@pytest.mark.parametrize("argv", [["--gamma", "0.9", "--lam", "0.8"], ["--lam", "0.5", "--whiten_rewards"], []])
def test_gae_follows_gamma_lambda_and_whitened_rewards(world, argv):
    stages = Stages(world, "ppo", "--kl_coef", "0", *argv)
    config = stages.config
    batch = stages.batch()
    values = world.values()
    assert close(rows(batch["values"]), values)
    rewards = []
    for score, v in zip(REWARDS, values):
        r = torch.zeros_like(v)
        r[-1] = score
        rewards.append(r)
    if config.whiten_rewards:
        rewards = whiten(rewards, shift_mean=False)
    returns, advantages = [], []
    for r, v in zip(rewards, values):
        a, following = torch.zeros_like(v), 0.0
        for t in reversed(range(len(r))):
            next_value = v[t + 1] if t + 1 < len(r) else 0.0
            following = r[t] + config.gamma * next_value - v[t] + config.gamma * config.lam * following
            a[t] = following
        advantages.append(a)
        returns.append(a + v)
    assert close(rows(batch["returns"]), returns)
    assert close(rows(batch["advantages"]), whiten(advantages))
    if argv:
        assert not close(rows(Stages(world, "ppo", "--kl_coef", "0").batch()["returns"]), returns)


# ---------------------------------------------------------------- the policy loss


LOG_RATIO_SHIFT = torch.tensor([0.3, -0.3, 0.1, -0.5, 0.05])  # old log-probs moved by these, so rho != 1


def shifted(batch: dict) -> dict:
    """The rollout with old log-probs moved (rho = exp(-shift)) and fixed advantages of both signs."""
    batch = dict(batch)
    n, length = batch["mask"].shape
    shift = LOG_RATIO_SHIFT.repeat(length // len(LOG_RATIO_SHIFT) + 1)[:length]
    batch["old_logp"] = (batch["old_logp"] + shift) * batch["mask"]
    batch["advantages"] = torch.tensor([1.0, -1.0, 0.5, -2.0, 1.5, -0.5, 2.0, -1.5])[:, None].expand(n, length) * 1.0
    return batch


def hand_policy_loss(world, batch, eps_low, eps_high, dual=None, level="token", agg="token-mean") -> float:
    logp = world.logp(world.policy)
    old, advantages = rows(batch["old_logp"]), rows(batch["advantages"])
    losses = []
    for lp, o, a in zip(logp, old, advantages):
        log_ratio = lp - o if level == "token" else (lp - o).mean().expand(len(lp))
        rho = log_ratio.exp()
        objective = torch.min(rho * a, rho.clamp(1 - eps_low, 1 + eps_high) * a)
        if dual is not None:
            objective = torch.where(a < 0, torch.max(objective, dual * a), objective)
        losses.append(-objective)
    if agg == "token-mean":
        return token_mean(losses)
    if agg == "seq-mean-token-mean":
        return sum(loss.mean() for loss in losses).item() / len(losses)
    return sum(loss.sum() for loss in losses).item() / len(losses)


@pytest.mark.parametrize("argv, low, high, dual, level, agg", [
    ([], 0.2, 0.2, None, "token", "token-mean"),
    (["--cliprange", "0.1"], 0.1, 0.1, None, "token", "token-mean"),
    (["--epsilon", "0.1", "--epsilon_high", "0.4"], 0.1, 0.4, None, "token", "token-mean"),  # ms-swift
    (["--eps_clip_low_high", "0.05", "0.3"], 0.05, 0.3, None, "token", "token-mean"),  # OpenRLHF
    (["--cliprange_high", "0.35"], 0.2, 0.35, None, "token", "token-mean"),
    (["--dual_clip", "1.2"], 0.2, 0.2, 1.2, "token", "token-mean"),
    (["--loss_agg_mode", "seq-mean-token-mean"], 0.2, 0.2, None, "token", "seq-mean-token-mean"),
    (["--loss_type", "dr_grpo"], 0.2, 0.2, None, "token", "seq-mean-token-sum"),  # ms-swift
    (["--policy_loss", "gspo"], 0.2, 0.2, None, "sequence", "seq-mean-token-mean"),
    (["--importance_sampling_level", "sequence", "--loss_agg_mode", "token-mean"], 0.2, 0.2, None, "sequence",
     "token-mean"),
])
def test_policy_loss_follows_the_clip_and_aggregation_flags(world, argv, low, high, dual, level, agg):
    stages = Stages(world, "grpo", "--kl_in_reward", "true", *argv)
    batch = shifted(stages.batch())
    loss, stats = stages.loss(batch)
    assert close(stats["policy_loss"], hand_policy_loss(world, batch, low, high, dual, level, agg))
    assert close(loss, stats["policy_loss"])  # no KL term, no entropy bonus
    if argv:
        assert not close(stats["policy_loss"], hand_policy_loss(world, batch, 0.2, 0.2))


def future_sums(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.tensor([sum(gamma ** (s - t) * x[s] for s in range(t, len(x))) for t in range(len(x))],
                        dtype=torch.float64)


def test_fipo_weighs_the_ppo_loss_by_the_future_kl(world):
    """docs/algorithms/fipo.md: w_t = clip(exp(sum_(s>=t) gamma^(s-t) log rho_s), 1 - c, 1 + c), gamma = 2^(-1/rate),
    tokens with rho > delta left out of the sums; A < 0 with rho above the threshold: w within [0.8, 1]; the PPO
    loss (dual clip delta) times w, token-mean."""
    stages = Stages(world, "grpo", "--kl_in_reward", "true", "--loss_type", "fipo", "--fipo_decay_rate", "2",
                    "--fipo_clip_range", "0.1", "--fipo_clip_high_only", "false", "--fipo_safety_threshold", "1.2",
                    "--delta", "1.3")
    batch = shifted(stages.batch())
    loss, stats = stages.loss(batch)
    gamma = 2 ** -0.5
    losses, keep = [], []
    for lp, o, a in zip(world.logp(world.policy), rows(batch["old_logp"]), rows(batch["advantages"])):
        rho = (lp - o).exp()
        weight = future_sums(torch.where(rho > 1.3, 0.0, lp - o), gamma).exp().clamp(0.9, 1.1)
        safe = ~((a < 0) & (rho > 1.2))
        weight = torch.where(safe, weight, weight.clamp(0.8, 1.0))
        objective = torch.min(rho * a, rho.clamp(0.8, 1.2) * a)
        objective = torch.where(a < 0, torch.max(objective, 1.3 * a), objective)
        losses.append(-objective * weight)
        keep.append(safe.double())
    assert close(stats["policy_loss"], token_mean(losses)) and close(loss, stats["policy_loss"])
    assert close(stats["fipo_safety_keep_ratio"], token_mean(keep)) and 0 < stats["fipo_safety_keep_ratio"] < 1
    assert not close(stats["policy_loss"], hand_policy_loss(world, batch, 0.2, 0.2, dual=1.3))  # the weights count
    grpo = Stages(world, "grpo", "--kl_in_reward", "true").loss(batch)[1]["policy_loss"]
    assert not close(stats["policy_loss"], grpo) and "fipo_influence_weight_mean" not in Stages(
        world, "grpo", "--kl_in_reward", "true").loss(batch)[1]


def test_real_classifies_the_samples_of_each_prompt(world):
    """docs/algorithms/real.md: s = mean_t log(pi / pi_old) / tau per sample; per group log(1 + sum_pos e^-s) +
    log(1 + sum_neg e^s) (A > 0 positive, A <= 0 negative), over the groups; the KL term token-mean. Through the
    update stage too: micro batches of whole groups, each its share of the optimizer batch."""
    argv = ["--loss_type", "real", "--real_tau", "0.25", "--per_device_train_batch_size", "4", "--kl_coef", "0.1"]
    stages = Stages(world, "grpo", *argv)
    batch = shifted(stages.batch())
    loss, stats = stages.loss(batch)
    logits = [(lp - o).mean() / 0.25 for lp, o in zip(world.logp(world.policy), rows(batch["old_logp"]))]
    signs = [a[0] > 0 for a in rows(batch["advantages"])]
    want = 0.0
    for g in range(2):
        group = range(4 * g, 4 * g + 4)
        want += math.log(1 + sum(math.exp(-logits[i]) for i in group if signs[i]))
        want += math.log(1 + sum(math.exp(logits[i]) for i in group if not signs[i]))
    assert close(stats["policy_loss"], want / 2)
    lr = [p - r for p, r in zip(world.logp(world.policy), world.logp(world.ref))]
    assert close(loss - stats["policy_loss"], 0.1 * token_mean([kl_estimate(x, "k3") for x in lr]))
    grpo = Stages(world, "grpo", "--kl_coef", "0.1").loss(batch)[1]["policy_loss"]
    assert not close(stats["policy_loss"], grpo)
    # the update: optimizer batch 8 = 2 micro batches of 4, losses at the same weights, groups kept whole
    update = Stages(world, "grpo", *argv).update.update(batch, 8, 0)
    assert close(update["policy_loss"], want / 2)


def test_entropy_coef_subtracts_the_token_mean_entropy(world):
    stages = Stages(world, "grpo", "--kl_in_reward", "true", "--entropy_coef", "0.3", "--temperature", "0.9")
    loss, stats = stages.loss(stages.batch())
    entropy = token_mean(world.entropy(0.9))
    assert close(stats["entropy"], entropy)
    assert close(loss - stats["policy_loss"], -0.3 * entropy) and entropy > 10 * TOLERANCE


# ---------------------------------------------------------------- CHORD: the expert SFT loss mixed in


def hand_sft_loss(world, phi: bool) -> float:
    """docs/algorithms/chord.md: the expert rows' labelled-token NLL (weighed by p (1 - p) with phi), summed, divided
    by the count of labelled tokens."""
    total, count = 0.0, 0
    for row in EXPERT_ROWS:
        ids, mask = row["input_ids"], torch.tensor(row["assistant_masks"][1:], dtype=torch.float64)
        logp = torch.log_softmax(world.logits(world.policy, ids[:1], ids[1:]), -1)
        p = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1).exp()
        total += (-(p.log()) * (p * (1 - p) if phi else 1) * mask).sum().item()
        count += int(mask.sum())
    return total / count


@pytest.mark.parametrize("phi", [False, True])
def test_chord_mixes_the_expert_sft_loss_into_the_policy_loss(world, phi):
    """(1 - mu) x the policy loss + mu x the SFT loss of a batch of both expert rows; mu = --chord_mu_peak at the
    first optimizer step (no warmup)."""
    stages = Stages(world, "grpo", "--kl_in_reward", "true", *CHORD, "--chord_sft_per_device_train_batch_size", "2",
                    "--chord_enable_phi_function", str(phi).lower())
    batch = shifted(stages.batch())
    loss, stats = stages.loss(batch)
    grpo, sft, mu = hand_policy_loss(world, batch, 0.2, 0.2), hand_sft_loss(world, phi), 0.6
    assert close(stats["policy_loss"], grpo) and close(stats["chord_mu"], mu) and close(stats["chord_sft_loss"], sft)
    assert close(loss, (1 - mu) * grpo + mu * sft)
    assert not close(sft, hand_sft_loss(world, not phi)) and not close(loss, grpo)


def test_chord_draws_no_expert_batch_while_mu_is_zero(world):
    stages = Stages(world, "grpo", "--kl_in_reward", "true", *CHORD, "--chord_sft_per_device_train_batch_size", "2",
                    "--chord_mu_warmup_steps", "3")  # mu rises from 0 at step 0
    loss, stats = stages.loss(shifted(stages.batch()))
    assert stats["chord_mu"] == 0 and close(loss, stats["policy_loss"]) and stages.update.chord.batches.drawn == 0
    assert "chord_sft_loss" not in stats


# ---------------------------------------------------------------- the critic


@pytest.mark.parametrize("argv, clip, coef", [([], 0.2, 0.1), (["--value_clip", "0.05", "--vf_coef", "0.5"], 0.05, 0.5),
                                              (["--cliprange_value", "0.5"], 0.5, 0.1)])
def test_value_loss_follows_the_value_clip_and_its_weight(world, argv, clip, coef):
    stages = Stages(world, "ppo", "--kl_coef", "0", *argv)
    batch = dict(stages.batch())
    offsets = torch.tensor([0.3, -0.1, 0.02, -0.4, 0.15, 0.0, -0.25, 0.6])[:, None]
    batch["values"] = (batch["values"] + offsets) * batch["mask"]  # the rollout's V_old away from V, so clipping acts
    loss, stats = stages.loss(batch)
    values, old, returns = world.values(), rows(batch["values"]), rows(batch["returns"])
    per_token = [0.5 * torch.max((v - r) ** 2, (o + (v - o).clamp(-clip, clip) - r) ** 2)
                 for v, o, r in zip(values, old, returns)]
    assert close(stats["value_loss"], token_mean(per_token))
    assert close(loss - stats["policy_loss"], coef * token_mean(per_token))
    if argv:
        default = [0.5 * torch.max((v - r) ** 2, (o + (v - o).clamp(-0.2, 0.2) - r) ** 2)
                   for v, o, r in zip(values, old, returns)]
        assert not close(0.1 * token_mean(default), coef * token_mean(per_token))


def test_critic_model_is_the_critic_that_trains(world, tmp_path):
    """--critic_model FOLDER: the critic starts from that folder's weights, its trained head kept."""
    from rlhfx.algos.rl.loop import critic_model

    folder = tmp_path / "critic"
    world.critic.save_pretrained(folder)
    args, config = options("ppo", "--model", tiny_model_path(), "--critic_model", folder, "--train_type", "full")
    critic = critic_model(args, config, None, torch.device("cpu"))
    assert torch.equal(critic.score.weight, world.critic.score.weight)
    args, config = options("ppo", "--model", tiny_model_path(), "--train_type", "full")
    default = critic_model(args, config, None, torch.device("cpu"))
    assert not default.score.weight.any()  # --model with a new zero head


def test_num_ppo_epochs_sets_the_passes_over_the_rollout(world):
    assert options("grpo", "--num_iterations", "3")[1].num_ppo_epochs == 3  # ms-swift's name
    for argv, passes in (([], 1), (["--ppo_epochs", "2"], 2)):
        stages = Stages(world, "grpo", "--batch_size", "4", *argv)
        stages.update.update(stages.batch(), 4, 0)
        assert stages.update.scheduler.last_epoch == passes * 2  # 8 samples in optimizer batches of 4


# ---------------------------------------------------------------- reward shaping and rewards


def test_overlong_buffer_penalises_the_last_tokens_by_the_factor(world):
    """DAPO: 0 up to generate_max_len - buffer tokens, then falling linearly to -factor at generate_max_len."""
    from rlhfx.algos.rl.rollout import RolloutStage

    _, config = options("grpo", "--generate_max_len", "8", "--overlong_buffer_len", "4", "--overlong_penalty_factor",
                        "0.5")
    stage = RolloutStage.__new__(RolloutStage)
    stage.config = config
    stage.generate = lambda rows, sampling: ([None] * 4, [[1]] * 4, [[5] * n for n in (3, 4, 6, 8)], [True] * 4,
                                             [[0.0]] * 4, [None] * 4)
    stage.sampling, stage.rewards = None, lambda samples: [0.0] * 4
    penalties = [sample[5] for sample in stage.score([{}])[0]]
    assert penalties == pytest.approx([0.0, 0.0, -0.5 * 2 / 4, -0.5])


def test_cosine_reward_knobs_set_its_four_corners_and_length(world):
    from rlhfx.rewards.builtin import NamedReward
    from rlhfx.rewards.sources import Sample

    _, config = options("grpo", "--reward_funcs", "cosine", "--cosine_min_len_value_correct", "2",
                        "--cosine_max_len_value_correct", "1", "--cosine_min_len_value_wrong", "-2",
                        "--cosine_max_len_value_wrong", "-1", "--cosine_max_len", "10")
    lengths, answers = [0, 5, 10, 0, 5, 10], ["7", "7", "7", "8", "8", "8"]
    samples = [Sample([], "", f"<answer>{a}</answer>", "7", [5] * n) for a, n in zip(answers, lengths)]

    def cos(t, at_zero, at_max):  # arXiv 2502.03373: at_zero at length 0, along half a cosine to at_max at L
        return at_max + (at_zero - at_max) * (1 + math.cos(t * math.pi / 10)) / 2

    want = [cos(t, 2, 1) for t in lengths[:3]] + [cos(t, -2, -1) for t in lengths[3:]]
    assert NamedReward("cosine", config)(samples) == pytest.approx(want)


@pytest.mark.parametrize("argv, message", [
    (["--rlhf_type", "grpo", "--lam", "0.9"], "--lam (GAE) does not apply"),
    (["--rlhf_type", "grpo", "--gamma", "0.9"], "discounts nothing"),
    (["--rlhf_type", "grpo", "--vf_coef", "0.5"], "--vf_coef (the critic's value loss) does not apply"),
    (["--rlhf_type", "ppo", "--kl_horizon", "500"], "--kl_horizon configures the adaptive KL controller"),
    (["--rlhf_type", "grpo", "--overlong_penalty_factor", "2"], "add --overlong_buffer_len"),
    (["--rlhf_type", "grpo", "--cosine_max_len", "20"], "not among --reward_funcs"),
    (["--rlhf_type", "grpo", "--top_k", "-2"], "--top_k is -2"),
    (["--rlhf_type", "grpo", "--fipo_decay_rate", "16"], "only --loss_type fipo uses"),
    (["--rlhf_type", "grpo", "--loss_type", "fipo", "--real_tau", "1"], "only --loss_type real uses"),
    (["--rlhf_type", "grpo", "--loss_type", "real", "--batch_size", "4", "--epsilon", "0.1"],
     "--cliprange does not apply to --loss_type real"),
])
def test_a_flag_that_would_change_nothing_is_refused(run_cli, argv, message):  # noqa: F811
    code, out = run_cli("rlhf", "--model", "tiny", "--dataset", "demo-prompts", "--reward_funcs", "demo", *argv)
    assert code == 2 and message in out, out


# ---------------------------------------------------------------- read by the loop: the KL controller, prompt_max_len


def test_adaptive_kl_and_prompt_max_len_in_a_two_step_run(run_cli, tmp_path):  # noqa: F811
    """kl_coef <- kl_coef (1 + clip(KL/target - 1, -0.2, 0.2) n/horizon) after each rollout (n: its samples), and
    prompts longer than --prompt_max_len tokens are dropped (counted in the run's output)."""
    from transformers import AutoTokenizer

    from rlhfx.registry.demo_task import DATA_DIR
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template

    prompts = [json.loads(line) for line in (DATA_DIR / "demo_prompts_train.jsonl").read_text().splitlines()[:12]]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in prompts))
    encoder = ChatEncoder(AutoTokenizer.from_pretrained(tiny_model_path()), get_template("chatml"))
    lengths = sorted(len(encoder.encode_prompt([{"role": "user", "content": row["prompt"]}])) for row in prompts)
    limit = sorted(set(lengths))[-2]  # the longest prompts go
    dropped = sum(n > limit for n in lengths)
    assert 0 < dropped < len(lengths) - 2
    out_dir = tmp_path / "run"
    code, out = run_cli("rlhf", "--rlhf_type", "ppo", "--model", "tiny", "--template", "chatml", "--dataset", data,
                        "--reward_funcs", "demo", "--train_type", "full", "--max_steps", "2", "--rollout_batch_size",
                        "2", "--generate_max_len", "6", "--logging_steps", "1", "--kl_coef", "0.3", "--target_kl", "0.01",
                        "--kl_horizon", "40", "--prompt_max_len", limit, "--output_dir", out_dir, "--save_steps", "-1")
    assert code == 0, out
    assert f"dropped {dropped} prompts longer than --prompt_max_len {limit}" in out
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    first, second = [m for m in metrics if "kl_coef" in m][:2]
    assert first["kl_coef"] == pytest.approx(0.3)
    error = min(max(first["kl"] / 0.01 - 1, -0.2), 0.2)
    assert second["kl_coef"] == pytest.approx(0.3 * (1 + error * 2 / 40), rel=1e-6)
    assert abs(second["kl_coef"] - 0.3) > 1e-4  # moved: the controller ran with these flags


def test_train_batch_size_is_split_over_the_ranks_the_loop_is_given(monkeypatch, tmp_path):
    """--train_batch_size is the global optimizer batch: each of the `world` ranks that share a rollout takes its
    share, also where the process's own world is 1 (a Ray driver plans for its actor group's ranks)."""
    from types import SimpleNamespace

    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.loop import OnlineRLTrainer

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args, config = options("grpo", "--train_batch_size", "16", "--per_device_train_batch_size", "2",
                           "--rollout_batch_size", "4", "--n_samples_per_prompt", "4", "--max_steps", "3")
    prompts = [{"prompt_ids": [1, 2, 3]}] * 8
    ctx = SimpleNamespace(args=args, tokenizer=None, hf_args={"output_dir": str(tmp_path)}, train_dataset=prompts,
                          eval_dataset=None, callbacks=[])
    for world, micro_steps in ((1, 8), (2, 4), (4, 2)):
        trainer = OnlineRLTrainer.__new__(OnlineRLTrainer)
        trainer._plan(ctx, config, Ranks(), world)
        assert trainer.train_batch == 2 * micro_steps  # per rank: 16 over the world
        assert trainer.total_updates == 3 * config.num_ppo_epochs * math.ceil(16 / world / trainer.train_batch)
