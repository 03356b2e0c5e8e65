"""The online RL flags made one RLConfig: defaults < the --rlhf_type preset < flags given explicitly; then checked.

grpo, rloo and reinforce_pp are presets of one trainer: they only change defaults, and any flag given explicitly wins.
"""

from dataclasses import dataclass

from rlhfx.algos.rl_math import GROUP_ESTIMATORS
from rlhfx.errors import RlhfxError
from rlhfx.training.swift_flags import rollout_prompts

DEFAULTS = dict(advantage_estimator="gae", n_samples_per_prompt=1, kl_coef=0.01, kl_estimator="k1", use_kl_loss=False)
PRESETS = {
    "ppo": {},
    "grpo": dict(advantage_estimator="group_norm", n_samples_per_prompt=4, kl_coef=0.04, kl_estimator="k3",
                 use_kl_loss=True),
    "rloo": dict(advantage_estimator="rloo", n_samples_per_prompt=4),
    "reinforce_pp": dict(advantage_estimator="reinforce"),
}
# --scale_rewards that other estimators have by construction: dr_grpo is group_norm with none; reinforce_baseline
# (ms-swift's reinforce_plus_plus) divides by the whole batch's std when it whitens
OWN_SCALE = {"dr_grpo": "none", "rloo": "none", "reinforce_baseline": "batch"}


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
    cliprange_high: float | None
    policy_loss: str
    loss_agg_mode: str | None
    dual_clip: float | None
    dynamic_sampling: bool
    max_resample_times: int
    overlong_buffer_len: int | None
    overlong_penalty_factor: float
    overlong_filter: bool
    enable_vllm_is_correction: bool
    vllm_is_correction_type: str
    vllm_is_truncated_threshold: list
    kl_unbiased_gradient: bool
    cliprange_value: float | None
    vf_coef: float
    gamma: float
    lam: float
    whiten_rewards: bool
    scale_rewards: str
    normalize_reward: bool
    reward_clip_range: float | None
    entropy_coef: float
    loss_type: str | None = None  # ms-swift's; sapo: SAPO's gate with --tau_pos / --tau_neg instead of the clip
    tau_pos: float = 1.0
    tau_neg: float = 1.05

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
    if args.steps_per_generation:  # TRL / ms-swift's size of a rollout
        values["rollout_batch_size"] = rollout_prompts(args, values["n_samples_per_prompt"])
    if args.kl_in_reward is not None:  # ms-swift: the KL as a reward penalty (true) or as a loss term (false)
        if "use_kl_loss" in args.explicit and args.use_kl_loss == args.kl_in_reward:
            raise RlhfxError(f"--kl_in_reward {args.kl_in_reward} and --use_kl_loss {args.use_kl_loss} contradict "
                             "each other.", "keep one of them.")
        values["use_kl_loss"] = not args.kl_in_reward
    config = RLConfig(**values)
    _resolve_loss(config, args)
    if config.advantage_estimator in GROUP_ESTIMATORS and config.n_samples_per_prompt < 2:
        raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} compares the samples of a prompt, "
                         f"but --n_samples_per_prompt is {config.n_samples_per_prompt}.",
                         "sample at least 2 responses per prompt (e.g. --n_samples_per_prompt 4).")
    if "scale_rewards" in args.explicit and config.advantage_estimator != "group_norm" and \
            config.scale_rewards != OWN_SCALE.get(config.advantage_estimator):
        raise RlhfxError(f"--scale_rewards {config.scale_rewards} sets the std that group_norm (grpo's estimator) "
                         f"divides by, not --advantage_estimator {config.advantage_estimator}'s scaling.",
                         "use --advantage_estimator group_norm (--rlhf_type grpo), or drop --scale_rewards.")
    if config.temperature <= 0:
        why = ("every sample of a prompt would be the same, so each group's rewards are equal and every advantage is 0: "
               "nothing is learned" if config.advantage_estimator in GROUP_ESTIMATORS else
               "the update's log-probs are of logits / temperature, which greedy decoding does not sample from")
        raise RlhfxError(f"--temperature {config.temperature} (greedy rollouts) with --advantage_estimator "
                         f"{config.advantage_estimator}: {why}.", "sample the rollouts: --temperature 1.0 (the default).")
    if config.dual_clip is not None and config.dual_clip <= 1:
        raise RlhfxError(f"--dual_clip is {config.dual_clip}.", "use a constant above 1 (e.g. 3), or leave it off.")
    if config.dynamic_sampling and config.advantage_estimator not in GROUP_ESTIMATORS:
        raise RlhfxError(f"--dynamic_sampling keeps the prompts whose samples' rewards differ, which needs a group "
                         f"estimator, not --advantage_estimator {config.advantage_estimator}.",
                         "use --rlhf_type grpo or rloo (or a group --advantage_estimator), or drop --dynamic_sampling.")
    if config.overlong_buffer_len is not None and not 0 < config.overlong_buffer_len <= config.generate_max_len:
        raise RlhfxError(f"--overlong_buffer_len {config.overlong_buffer_len} must be in (0, --generate_max_len "
                         f"{config.generate_max_len}]: the penalty falls over the last that many tokens.",
                         "use e.g. a quarter of --generate_max_len.")
    if config.enable_vllm_is_correction and args.engine != "vllm":
        raise RlhfxError("--enable_vllm_is_correction corrects for vLLM's log-probs differing from the trainer's, "
                         f"but the rollouts come from --engine {args.engine}, which samples with the policy itself.",
                         "use --engine vllm, or drop --enable_vllm_is_correction.")
    low_high = config.vllm_is_truncated_threshold
    if len(low_high) != 2 or not 0 <= low_high[0] <= 1 <= low_high[1]:
        raise RlhfxError(f"--vllm_is_truncated_threshold {' '.join(map(str, low_high))}: it takes LOW HIGH with "
                         "0 <= LOW <= 1 <= HIGH.", "e.g. 0.5 5 (OpenRLHF's default).")
    if config.kl_unbiased_gradient and not config.use_kl_loss:
        raise RlhfxError("--kl_unbiased_gradient changes the gradient of the KL loss term, but the KL is a reward "
                         "penalty in this run.", "add --use_kl_loss (grpo has it on), or drop --kl_unbiased_gradient.")
    if config.max_resample_times < 0:
        raise RlhfxError(f"--max_resample_times is {config.max_resample_times}.", "use 0 or more rounds.")
    for name in ("rollout_batch_size", "micro_rollout_batch_size", "num_ppo_epochs", "generate_max_len",
                 "n_samples_per_prompt"):
        if getattr(config, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(config, name)}.", "use a positive number.")
    if not config.uses_critic and ({"critic_model", "critic_learning_rate"} & args.explicit):
        raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} trains no critic, so --critic_model "
                         "and --critic_learning_rate do not apply.", "drop them, or use --advantage_estimator gae.")
    return config


# ms-swift's --loss_type for GRPO-style runs, as verl's --loss_agg_mode (ms-swift's dr_grpo also divides by the
# constant max completion length, which only scales the gradient); sapo also swaps the ratio clip for SAPO's gate
SWIFT_LOSS_TYPES = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
                    "dr_grpo": "seq-mean-token-sum", "sapo": "seq-mean-token-mean"}


def _resolve_loss(config: RLConfig, args) -> None:
    """The policy-loss flags and their OpenRLHF / ms-swift spellings, made one value each (conflicts refused)."""
    if args.importance_sampling_level:
        level = {"token": "ppo", "sequence": "gspo"}[args.importance_sampling_level]
        if "policy_loss" in args.explicit and config.policy_loss != level:
            raise RlhfxError(f"--policy_loss {config.policy_loss} and --importance_sampling_level "
                             f"{args.importance_sampling_level} ask for different losses.", "keep one of them.")
        config.policy_loss = level
    if args.loss_type:
        if args.loss_type not in SWIFT_LOSS_TYPES:
            raise RlhfxError(f"--loss_type {args.loss_type} is a DPO loss; online RL takes "
                             f"{', '.join(SWIFT_LOSS_TYPES)} (ms-swift's names for --loss_agg_mode).",
                             "use --loss_agg_mode token-mean | seq-mean-token-mean | seq-mean-token-sum, or drop it.")
        mode = SWIFT_LOSS_TYPES[args.loss_type]
        if config.loss_agg_mode not in (None, mode):
            raise RlhfxError(f"--loss_type {args.loss_type} means --loss_agg_mode {mode}, not {config.loss_agg_mode}.",
                             "keep one of them.")
        config.loss_agg_mode = mode
    if config.loss_type == "sapo":
        if config.dual_clip is not None:
            raise RlhfxError("--dual_clip bounds PPO's clipped loss; --loss_type sapo has no clip (a soft gate).",
                             "drop --dual_clip, or use another --loss_type.")
        if min(config.tau_pos, config.tau_neg) <= 0:
            raise RlhfxError(f"--tau_pos {config.tau_pos} / --tau_neg {config.tau_neg}: SAPO's gate temperatures "
                             "must be positive.", "use e.g. --tau_pos 1 --tau_neg 1.05 (the defaults).")
    elif {"tau_pos", "tau_neg"} & args.explicit:
        raise RlhfxError("--tau_pos / --tau_neg are the temperatures of SAPO's gate, which only --loss_type sapo uses.",
                         "add --loss_type sapo, or drop them.")
    if config.loss_agg_mode is None:
        config.loss_agg_mode = "seq-mean-token-mean" if config.policy_loss == "gspo" else "token-mean"
    if args.eps_clip_low_high is not None:
        if len(args.eps_clip_low_high) != 2 or {"cliprange", "cliprange_high"} & args.explicit:
            raise RlhfxError(f"--eps_clip_low_high {' '.join(map(str, args.eps_clip_low_high))}: it takes two values, "
                             "LOW HIGH, and replaces --cliprange / --cliprange_high.", "give LOW HIGH, or those two flags.")
        config.cliprange, config.cliprange_high = args.eps_clip_low_high
    if config.cliprange_high is None:
        config.cliprange_high = config.cliprange
    if not (0 < config.cliprange < 1 and config.cliprange_high > 0):
        raise RlhfxError(f"The ratio clip is [1 - {config.cliprange}, 1 + {config.cliprange_high}].",
                         "use 0 < --cliprange < 1 and --cliprange_high > 0 (e.g. 0.2 and 0.28).")


def check_args(args) -> None:
    """Called by `rlhfx rlhf` before anything loads: bad combinations fail in a second."""
    from rlhfx.rewards.builtin import load_plugins
    from rlhfx.rewards.sources import check_reward_sources

    resolve_config(args, args.rlhf_type)
    check_vllm_flags(args)
    if args.engine == "vllm" and args.vllm_mode != "server":
        from rlhfx.engines import check_engine_available

        check_engine_available("vllm")
    load_plugins(args.external_plugins)
    check_reward_sources(args.reward_model or [], args.reward_func or [], args.remote_rm_url or [], args.reward_weights,
                         args)


VLLM_ONLY = ("vllm_tensor_parallel_size", "vllm_max_model_len", "sleep_level", "offload_model", "offload_optimizer")
GPU_ONLY = {"sleep_level": "vLLM's sleep mode releases GPU memory", "offload_model": "it frees GPU memory",
            "offload_optimizer": "it frees GPU memory"}


SERVER_ONLY = ("vllm_server_host", "vllm_server_port", "vllm_server_base_url", "vllm_server_timeout",
               "vllm_check_weights_every")
# colocate flags -> the `rlhfx rollout` flag that sets the same on the server
ON_THE_SERVER = {"vllm_tensor_parallel_size": "--tp_size", "vllm_max_model_len": "--max_model_len",
                 "vllm_gpu_memory_utilization": "--gpu_memory_utilization", "sleep_level": None,
                 "offload_model": None, "offload_optimizer": None}


def check_vllm_flags(args) -> None:
    """The vLLM rollout flags need --use_vllm (--engine vllm); the memory-sharing ones need a GPU to share. With
    --vllm_mode server the engine's flags belong to `rlhfx rollout`, and the server must answer (before any model
    loads here)."""
    server = args.engine == "vllm" and args.vllm_mode == "server"
    stray = [name for name in SERVER_ONLY if name in args.explicit]
    if stray and not server:
        raise RlhfxError(f"--{stray[0]} configures the rollout server of --vllm_mode server, but this run generates "
                         "in-process.", "add --use_vllm true --vllm_mode server, or drop it.")
    if server:
        from rlhfx.engines.remote import server_url, wait_for_server

        colocate = [name for name in ON_THE_SERVER if name in args.explicit and args.values[name] not in (None, False, 0)]
        if colocate:
            name, there = colocate[0], ON_THE_SERVER[colocate[0]]
            raise RlhfxError(f"--{name} configures the in-process vLLM engine, but with --vllm_mode server the engine "
                             "is the `rlhfx rollout` server's.", f"pass {there} to `rlhfx rollout` instead, and drop "
                             f"--{name}." if there else f"drop --{name}: the server's memory is not the trainer's.")
        if args.vllm_check_weights_every < 0:
            raise RlhfxError(f"--vllm_check_weights_every is {args.vllm_check_weights_every}.",
                             "use 0 (never), 1 (every push) or N (every Nth push).")
        wait_for_server(server_url(args), args.vllm_server_timeout)
        return
    given = [name for name in VLLM_ONLY if name in args.explicit and args.values[name] not in (None, False, 0)]
    if given and args.engine != "vllm":
        raise RlhfxError(f"--{given[0]} configures vLLM rollouts, but this run generates with the policy itself "
                         "(--engine pt).", "add --use_vllm true --vllm_mode colocate (or --engine vllm), or drop it.")
    import torch

    gpus = torch.cuda.device_count()
    for name in given:
        if name in GPU_ONLY and not gpus:
            raise RlhfxError(f"--{name} needs a GPU: {GPU_ONLY[name]}, and no CUDA GPU is visible.",
                             f"run on a GPU machine, or drop --{name} (on the CPU there is no GPU memory to free).")
    tp = args.vllm_tensor_parallel_size
    if tp > 1 and tp > gpus:
        raise RlhfxError(f"--vllm_tensor_parallel_size {tp} needs a GPU for each of its {tp} shards; "
                         f"{gpus} CUDA GPUs are visible.", "lower it to the GPUs you have (1 on the CPU).")

