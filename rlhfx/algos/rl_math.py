"""The math of online RL (ALGORITHMS.md, "Online RL"), as pure functions on padded tensors.

Every per-token tensor is [batch, response_len], aligned to response tokens and right padded;
`mask` is 1 on real response tokens and 0 on padding. The online RL trainer (rlhfx.algos.rl) calls
exactly these functions; tests/test_rl_math.py checks each against hand-computed numbers.

Statistics over the whole batch take `reduce`: a function that sums a tensor over every rank of a data-parallel
run (None: this process holds the whole batch), so whitening gives the same numbers at any world size.
"""

import math

import torch

KL_CLAMP = 10.0
LOG_RATIO_CLAMP = 20.0  # |log-ratio| bound before exp (OpenRLHF's): exp(88.7) overflows float32, and inf x 0 is NaN
GROUP_ESTIMATORS = ("reinforce_baseline", "rloo", "group_norm", "dr_grpo")
ESTIMATORS = ("gae", "reinforce") + GROUP_ESTIMATORS


def masked_mean(x: torch.Tensor, mask: torch.Tensor, reduce=None) -> torch.Tensor:
    """Mean over the tokens where mask is 1 (all of them, across the batch; across the ranks with `reduce`)."""
    total = torch.stack([(x * mask).sum(), mask.sum().to(x.dtype)])
    if reduce is not None:
        total = reduce(total)
    return total[0] / total[1].clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce=None) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with mean and (population) variance over the masked tokens; padding stays 0.
    shift_mean=False only rescales (--whiten_rewards): the mean is added back."""
    mean = masked_mean(x, mask, reduce)
    var = masked_mean((x - mean) ** 2, mask, reduce)
    white = (x - mean) * torch.rsqrt(var + eps)
    return (white if shift_mean else white + mean) * mask


KL_IS_WEIGHT_CLAMP = 10.0


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str, mask: torch.Tensor,
                 old_logp: torch.Tensor | None = None) -> torch.Tensor:
    """KL estimate per response token from lr = logp - logref: k1 = lr, k2 = lr^2/2, k3 = exp(-lr) - 1 + lr,
    clamped to [-10, 10]; 0 on padding. k3 exponentiates lr clamped to [-20, 20] (where k3 is past 10 anyway):
    exp(-lr) of lr < -88.7 is inf, and the outer clamp's zero gradient times inf would be a NaN gradient.

    With old_logp (--kl_unbiased_gradient, the KL loss term) the value stays the estimator's but the gradient
    is the unbiased one of KL(pi || ref) for samples drawn from pi_old: w lr grad(logp), w = pi / pi_old
    (detached, at most 10); every estimator then has this same gradient."""
    if old_logp is not None:
        value = kl_per_token(logp, ref_logp, estimator, mask).detach()
        weight = torch.exp((logp - old_logp).clamp(max=math.log(KL_IS_WEIGHT_CLAMP))).detach()
        surrogate = weight * (logp - ref_logp) ** 2 / 2 * mask
        return value + surrogate - surrogate.detach()
    lr = logp - ref_logp
    if estimator == "k1":
        kl = lr
    elif estimator == "k2":
        kl = lr ** 2 / 2
    elif estimator == "k3":
        lr = lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = torch.exp(-lr) - 1 + lr
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}")
    return kl.clamp(-KL_CLAMP, KL_CLAMP) * mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """[batch] index of each row's last response token."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask).max(dim=1).values.long()


def token_rewards(kl: torch.Tensor, kl_coef: float, score: torch.Tensor, mask: torch.Tensor,
                  clip: float | None = None) -> torch.Tensor:
    """r_t = -kl_coef kl_t + [t is the last response token] clip(R, -c, c)."""
    rewards = -kl_coef * kl * mask
    if clip is not None:
        score = score.clamp(-clip, clip)
    last = last_token_index(mask)
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns): delta_t = r_t + gamma V_(t+1) - V_t with V = 0 after the last token,
    A_t = delta_t + gamma lam A_(t+1), returns = A + V. Not whitened."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_(k>=t) gamma^(k-t) r_k (REINFORCE returns); 0 on padding."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * mask


SCALE_REWARDS = ("group", "batch", "none")


def batch_std(x: torch.Tensor, reduce=None) -> torch.Tensor:
    """The sample (n-1) std of all of x, over every rank with `reduce`."""
    stats = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), device=x.device)])
    total, squares, count = reduce(stats) if reduce is not None else stats
    return ((squares - total * total / count) / (count - 1).clamp(min=1)).clamp(min=0).sqrt()


def group_scores(scores: torch.Tensor, n: int, estimator: str, scale: str = "group", reduce=None) -> torch.Tensor:
    """Sequence rewards of consecutive groups of n samples of one prompt, turned into per-sample scores:
    reinforce_baseline / dr_grpo R - mean_group, rloo R_i - (sum_j R_j - R_i)/(n-1),
    group_norm (R - mean_group)/(std + 1e-9), the std chosen by `scale` (--scale_rewards): group = the group's,
    batch = the whole rollout's (every rank's rewards), both the sample (n-1) std as torch.std gives; none = no
    division (Dr. GRPO, the same as dr_grpo)."""
    if n < 2:
        raise ValueError("group estimators need n_samples_per_prompt > 1")
    groups = scores.view(-1, n)
    mean = groups.mean(dim=1, keepdim=True)
    if estimator in ("reinforce_baseline", "dr_grpo"):
        out = groups - mean
    elif estimator == "rloo":
        out = groups - (groups.sum(dim=1, keepdim=True) - groups) / (n - 1)
    elif estimator == "group_norm":
        out = groups - mean
        if scale == "group":
            out = out / (groups.std(dim=1, keepdim=True) + 1e-9)
        elif scale == "batch":
            out = out / (batch_std(scores, reduce) + 1e-9)
    else:
        raise ValueError(f"unknown group estimator {estimator!r}")
    return out.reshape(-1)


LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, n_tokens: float | None = None,
              n_sequences: float | None = None) -> torch.Tensor:
    """A per-token loss made one number (verl's loss_agg_mode):
    token-mean: sum over every token / the number of tokens (DAPO's token-level loss);
    seq-mean-token-mean: each sequence's token mean, averaged over sequences (GRPO's, GSPO's);
    seq-mean-token-sum: each sequence's token sum, averaged over sequences (Dr. GRPO's, without its constant
    1 / max length). n_tokens, n_sequences: the totals of the whole optimizer batch when `loss` is one micro batch
    of it (so accumulated micro batches add up to the batch's loss); default this batch's own. Sequences with no
    token left in the mask (--overlong_filter) do not count."""
    if mode == "token-mean":
        return (loss * mask).sum() / (mask.sum().clamp(min=1) if n_tokens is None else n_tokens)
    per_sequence = (loss * mask).sum(1)
    if mode == "seq-mean-token-mean":
        per_sequence = per_sequence / mask.sum(1).clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"unknown loss_agg_mode {mode!r}")
    if n_sequences is None:
        n_sequences = (mask.sum(1) > 0).sum().clamp(min=1)
    return per_sequence.sum() / n_sequences


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: float, factor: float) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to each sequence reward: 0 up to max_len - buffer tokens, then falling
    linearly to -factor at max_len: -factor min(length - (max_len - buffer), buffer) / buffer where positive."""
    exceed = (lengths.float() - (max_len - buffer)).clamp(min=0, max=buffer)
    return -factor * exceed / buffer


def rollout_correction(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, kind: str,
                       low: float, high: float) -> tuple[torch.Tensor, dict]:
    """Per-token weights on the policy loss for rollouts sampled by another engine (vLLM) than the one that computes
    old_logp: r = pi_old / pi_rollout = exp(old_logp - rollout_logp). tis: r clamped to [low, high] (truncated
    importance sampling); icepop: r where low <= r <= high, else 0 (the token is masked out). Also the statistics:
    rollout_kl, the token mean of rollout_logp - old_logp, and is_masked, the share of tokens icepop drops."""
    ratio = torch.exp((old_logp - rollout_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)) * mask
    if kind == "tis":
        weights = ratio.clamp(low, high)
    elif kind == "icepop":
        weights = ratio * ((ratio >= low) & (ratio <= high))
    else:
        raise ValueError(f"unknown rollout correction {kind!r}")
    stats = {"rollout_kl": masked_mean(rollout_logp - old_logp, mask).item(),
             "is_masked": masked_mean(((ratio < low) | (ratio > high)).float(), mask).item()}
    return weights * mask, stats


def varied_groups(scores: torch.Tensor, n: int) -> torch.Tensor:
    """[groups] whether the n rewards of each prompt differ (DAPO's dynamic sampling keeps only those: a group whose
    rewards are all equal has every advantage 0 and only dilutes the batch)."""
    groups = scores.view(-1, n)
    return groups.max(dim=1).values > groups.min(dim=1).values


def sapo_gate(ratio: torch.Tensor, advantages: torch.Tensor, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """SAPO's soft gate (Soft Adaptive Policy Optimization, Qwen 2025), in place of PPO's hard clip:
    g(rho) = sigmoid(tau (rho - 1)) 4 / tau, tau = tau_pos where A > 0, else tau_neg. Its derivative
    4 sigmoid (1 - sigmoid) is 1 at rho = 1 (the plain policy gradient on-policy) and fades smoothly as rho leaves
    1, faster for a larger tau (tau_neg > tau_pos damps the negative-advantage tokens more)."""
    tau = torch.where(advantages > 0, tau_pos, tau_neg)
    return torch.sigmoid(tau * (ratio - 1)) * 4 / tau


def fipo_weights(log_ratio: torch.Tensor, ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 decay_rate: float, clip_range: float, clip_high_only: bool, safety_threshold: float,
                 delta: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FIPO's influence weight of each token (Future-KL Influenced Policy Optimization, arXiv 2603.19835), detached:
    the future KL F_t = sum_(s>=t) gamma^(s-t) log rho_s (token log-ratios, gamma = 2^(-1 / decay_rate); tokens whose
    ratio is above the dual clip `delta` add nothing), w = exp(F_t) clipped to [1 - c, 1 + c] ([1, 1 + c] with
    clip_high_only; c = 0: no clip); a token with A < 0 and ratio above safety_threshold keeps w within [0.8, 1].
    `ratio` is the one the loss uses (the sequence ratio under GSPO). Also the statistics: the token means of F, of w
    and of the tokens the safety rule leaves alone."""
    with torch.no_grad():
        steps = log_ratio * mask
        if delta is not None:
            steps = torch.where(ratio > delta, 0.0, steps)
        future_kl = discounted_returns(steps, mask, 2 ** (-1 / decay_rate))
        weight = torch.exp(future_kl)
        if clip_range:
            weight = weight.clamp(1.0 if clip_high_only else 1 - clip_range, 1 + clip_range)
        keep = ~((advantages < 0) & (ratio > safety_threshold))
        weight = torch.where(keep, weight, weight.clamp(0.8, 1.0))
        stats = {"fipo_future_kl_mean": masked_mean(future_kl, mask),
                 "fipo_influence_weight_mean": masked_mean(weight, mask),
                 "fipo_safety_keep_ratio": masked_mean(keep.float(), mask)}
    return weight, stats


def real_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, n: int,
              tau: float, n_groups: float | None = None) -> torch.Tensor:
    """REAL (Rewards as Labels, arXiv 2602.05630) on consecutive groups of n samples of a prompt: each sample's logit
    s = its token mean of log(pi / pi_old) / tau, its label the sign of its (token mean) advantage (positive: A > 0,
    negative: A <= 0); a group with both labels adds log(1 + sum_pos e^-s) + log(1 + sum_neg e^s), a group with one
    label adds 0; summed over groups / n_groups (default: this batch's groups; the optimizer batch's when this is
    one micro batch of it)."""
    tokens = mask.sum(1).clamp(min=1)
    logits = (((logp - old_logp) * mask).sum(1) / tokens / tau).view(-1, n)
    positive = ((advantages * mask).sum(1) / tokens > 0).view(-1, n)
    both = positive.any(1) & (~positive).any(1)
    zero = torch.zeros_like(logits[:, :1])
    negative_term = torch.logsumexp(torch.cat([logits.masked_fill(positive, -math.inf), zero], 1), 1)
    positive_term = torch.logsumexp(torch.cat([(-logits).masked_fill(~positive, -math.inf), zero], 1), 1)
    return ((negative_term + positive_term) * both).sum() / (logits.shape[0] if n_groups is None else n_groups)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                eps_low: float, eps_high: float, dual_clip: float | None = None, level: str = "token",
                agg: str = "token-mean", n_tokens: float | None = None, n_sequences: float | None = None,
                weights: torch.Tensor | None = None, sapo: tuple[float, float] | None = None,
                fipo: dict | None = None) -> dict[str, torch.Tensor]:
    """PPO clipped surrogate. rho = exp(logp - logp_old) per token (level "token", PPO), or per sequence
    exp(mean_t (logp - logp_old)) (level "sequence", GSPO), the log-ratio clamped to [-20, 20] first (an
    overflowing rho times an advantage of exactly 0 would be NaN); objective min(rho A, clip(rho, 1 - eps_low,
    1 + eps_high) A), with dual clip c > 1: max(objective, c A) where A < 0; with `sapo` = (tau_pos, tau_neg)
    instead sapo_gate(rho, A) A (no clip); loss = -objective, times FIPO's influence weights when `fipo` holds
    fipo_weights' knobs (its delta is dual_clip) and times the detached per-token `weights` when given (the rollout
    correction, TIS / ICEPOP), aggregated by `agg`.

    clip_ratio: share of tokens where the clipped term is the smaller one (clipping changed the objective; 0 for sapo).
    approx_kl: token mean of (rho - 1) - log rho with the token rho, an unbiased estimate of KL(old || new)."""
    token_log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if level == "token":
        log_ratio = token_log_ratio
    elif level == "sequence":
        sequence = ((logp - old_logp) * mask).sum(1) / mask.sum(1).clamp(min=1)
        log_ratio = sequence.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)[:, None].expand_as(logp)
    else:
        raise ValueError(f"unknown importance sampling level {level!r}")
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    objective = torch.min(unclipped, clipped) if sapo is None else sapo_gate(ratio, advantages, *sapo) * advantages
    if dual_clip is not None:
        objective = torch.where(advantages < 0, torch.max(objective, dual_clip * advantages), objective)
    loss, stats = -objective, {}
    if fipo is not None:
        influence, stats = fipo_weights(token_log_ratio, ratio, advantages, mask, delta=dual_clip, **fipo)
        loss = loss * influence
    if weights is not None:
        loss = loss * weights.detach()
    with torch.no_grad():
        clip_ratio = masked_mean((clipped < unclipped).float() * (sapo is None), mask)
        approx_kl = masked_mean((token_log_ratio.exp() - 1) - token_log_ratio, mask)
    return {"loss": aggregate(loss, mask, agg, n_tokens, n_sequences), "clip_ratio": clip_ratio, "approx_kl": approx_kl,
            **stats}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None, n_tokens: float | None = None) -> torch.Tensor:
    """0.5 max((V - ret)^2, (V_old + clip(V - V_old, -eps, eps) - ret)^2), token mean; unclipped without eps.
    n_tokens: the optimizer batch's token count when this is one micro batch of it (as in `aggregate`)."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return 0.5 * aggregate(loss, mask, "token-mean", n_tokens)


def entropy(logits: torch.Tensor, mask: torch.Tensor, n_tokens: float | None = None) -> torch.Tensor:
    """Token mean of the policy's entropy H = -sum_v p log p at each response position (n_tokens: as `value_loss`)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return aggregate(-(logp.exp() * logp).sum(-1), mask, "token-mean", n_tokens)


def advantages_and_returns(estimator: str, scores: torch.Tensor, kl: torch.Tensor, kl_coef: float,
                           mask: torch.Tensor, n: int, gamma: float, lam: float, reward_clip: float | None,
                           values: torch.Tensor | None = None, whiten_rewards: bool = False,
                           reduce=None, scale_rewards: str = "group") -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout's (advantages, returns) for one estimator. `kl` is the per-token penalty (zeros when the KL
    is a loss term instead). Group estimators turn the clipped sequence rewards into group scores first and
    use gamma = 1; gae, reinforce and reinforce_baseline advantages are whitened over all response tokens.
    whiten_rewards (gae) rescales the token rewards to unit std, keeping their mean, before GAE. scale_rewards picks
    group_norm's std (`group_scores`). Groups stay on one rank; whitening and batch statistics are summed over the
    ranks by `reduce`."""
    if estimator in GROUP_ESTIMATORS:
        scores = group_scores(scores.clamp(-reward_clip, reward_clip) if reward_clip else scores, n, estimator,
                              scale_rewards, reduce)
        rewards = token_rewards(kl, kl_coef, scores, mask)
        returns = discounted_returns(rewards, mask, 1.0)
        advantages = whiten(returns, mask, reduce=reduce) if estimator == "reinforce_baseline" else returns
        return advantages, returns
    rewards = token_rewards(kl, kl_coef, scores, mask, reward_clip)
    if estimator == "reinforce":
        returns = discounted_returns(rewards, mask, gamma)
        return whiten(returns, mask, reduce=reduce), returns
    if estimator == "gae":
        if whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False, reduce=reduce)
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        return whiten(advantages, mask, reduce=reduce), returns
    raise ValueError(f"unknown advantage estimator {estimator!r}")


def sequence_kl(kl: torch.Tensor, reduce=None) -> float:
    """The rollout's KL as logged and as --target_kl reads it: per-token KL summed over each sequence, averaged over
    sequences (Ziegler et al., TRL; OpenRLHF's --kl_target compares the per-token mean instead)."""
    total = torch.stack([kl.sum(), torch.tensor(float(kl.shape[0]), device=kl.device)])
    if reduce is not None:
        total = reduce(total)
    return (total[0] / total[1]).item()


class AdaptiveKLController:
    """kl_coef <- kl_coef (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon) (Ziegler et al.); fixed without a target."""

    def __init__(self, kl_coef: float, target: float | None, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target:
            error = min(max(kl / self.target - 1, -0.2), 0.2)
            self.value *= 1 + error * n / self.horizon


class RunningMoments:
    """Running mean and (population) std of every reward seen so far: --normalize_reward z-scores with them."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: list[float]) -> None:
        for value in values:  # Welford
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / (self.std + 1e-8)
