"""`--rlhf_type ppo | grpo | rloo | reinforce_pp`: rlhfx's own online RL trainer (TRL 1.16 has no PPO).

One trainer (rlhfx.training.rl_trainer) covers every `--advantage_estimator`; grpo, rloo and
reinforce_pp are presets of it: they only change defaults, and any flag given explicitly wins.
The math is in rlhfx.algos.rl_math (ALGORITHMS.md, "Online RL").
"""

from dataclasses import dataclass

from rlhfx.algos.rl_math import GROUP_ESTIMATORS
from rlhfx.errors import RlhfxError

KIND = "prompt"
NEEDS_REFERENCE = True
OWN_TRAINING_LOOP = True  # not a Hugging Face Trainer: it writes its own complete-or-absent checkpoints

DEFAULTS = dict(advantage_estimator="gae", n_samples_per_prompt=1, kl_coef=0.01, kl_estimator="k1", use_kl_loss=False)
PRESETS = {
    "ppo": {},
    "grpo": dict(advantage_estimator="group_norm", n_samples_per_prompt=4, kl_coef=0.04, kl_estimator="k3",
                 use_kl_loss=True),
    "rloo": dict(advantage_estimator="rloo", n_samples_per_prompt=4),
    "reinforce_pp": dict(advantage_estimator="reinforce"),
}


@dataclass
class RLConfig:
    """The flags of one online RL run with presets applied."""

    advantage_estimator: str
    n_samples_per_prompt: int
    kl_coef: float
    kl_estimator: str
    use_kl_loss: bool
    target_kl: float | None
    kl_horizon: int
    rollout_batch_size: int
    micro_rollout_batch_size: int
    num_ppo_epochs: int
    generate_max_len: int
    temperature: float
    top_p: float
    cliprange: float
    dual_clip: float | None
    cliprange_value: float | None
    vf_coef: float
    gamma: float
    lam: float
    whiten_rewards: bool
    normalize_reward: bool
    reward_clip_range: float | None
    entropy_coef: float

    @property
    def uses_critic(self) -> bool:
        return self.advantage_estimator == "gae"


def resolve_config(args, algo_name: str) -> RLConfig:
    """Defaults < the --rlhf_type preset < flags given explicitly; then the combinations are checked."""
    preset = {**DEFAULTS, **PRESETS[algo_name]}
    values = {name: getattr(args, name) for name in RLConfig.__dataclass_fields__}
    for name, default in preset.items():
        if name not in args.explicit or values[name] is None:
            values[name] = default
    config = RLConfig(**values)
    if config.advantage_estimator in GROUP_ESTIMATORS and config.n_samples_per_prompt < 2:
        raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} compares the samples of a prompt, "
                         f"but --n_samples_per_prompt is {config.n_samples_per_prompt}.",
                         "sample at least 2 responses per prompt (e.g. --n_samples_per_prompt 4).")
    if config.dual_clip is not None and config.dual_clip <= 1:
        raise RlhfxError(f"--dual_clip is {config.dual_clip}.", "use a constant above 1 (e.g. 3), or leave it off.")
    for name in ("rollout_batch_size", "micro_rollout_batch_size", "num_ppo_epochs", "generate_max_len",
                 "n_samples_per_prompt"):
        if getattr(config, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(config, name)}.", "use a positive number.")
    if not config.uses_critic and ({"critic_model", "critic_learning_rate"} & args.explicit):
        raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} trains no critic, so --critic_model "
                         "and --critic_learning_rate do not apply.", "drop them, or use --advantage_estimator gae.")
    return config


def check_args(args) -> None:
    """Called by `rlhfx rlhf` before anything loads: bad combinations fail in a second."""
    from rlhfx.rewards.sources import check_reward_sources

    resolve_config(args, args.rlhf_type)
    if args.engine == "vllm":
        from rlhfx.engines import check_engine_available

        check_engine_available("vllm")
    check_reward_sources(args.reward_model or [], args.reward_func or [], args.remote_rm_url or [], args.reward_weights)


def build_trainer(ctx):
    from rlhfx.training.rl_trainer import OnlineRLTrainer

    return OnlineRLTrainer(ctx, resolve_config(ctx.args, ctx.args.rlhf_type))
