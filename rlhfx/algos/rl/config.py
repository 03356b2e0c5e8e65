"""The online RL flags (rlhfx.algos.options.RLOptions, one dataclass; grpo, rloo and reinforce_pp are presets of
it that change defaults only, and any flag given explicitly wins) folded into the values the trainer reads, then
checked: `resolve` runs as the options' validate, before any model loads.
"""

from rlhfx.algos.options import RLOptions, build_options
from rlhfx.algos.rl.ray.placement import check_placement, check_resources, connect
from rlhfx.algos.rl_math import GROUP_ESTIMATORS
from rlhfx.errors import RlhfxError
from rlhfx.training.swift_flags import rollout_prompts

# --scale_rewards that other estimators have by construction: dr_grpo is group_norm with none; reinforce_baseline
# (ms-swift's reinforce_plus_plus) divides by the whole batch's std when it whitens
OWN_SCALE = {"dr_grpo": "none", "rloo": "none", "reinforce_baseline": "batch"}


def resolve_config(args, algo_name: str) -> RLOptions:
    """The validated options of --rlhf_type ALGO_NAME from parsed (and ms-swift-mapped) flags."""
    from rlhfx.algos import get_algo

    return build_options(get_algo(algo_name).options, algo_name, args)


# flags of gae's critic and advantages: with another estimator they would be ignored, so they are refused
GAE_ONLY = {"critic_model": "the critic", "critic_learning_rate": "the critic", "cliprange_value": "the critic's value "
            "loss", "vf_coef": "the critic's value loss", "lam": "GAE", "whiten_rewards": "GAE's token rewards"}


def resolve(config: RLOptions, args) -> None:
    """The spellings made one value each, the defaults that follow from other flags filled, the combinations checked."""
    explicit = args.explicit
    if config.steps_per_generation:  # TRL / ms-swift's size of a rollout
        config.rollout_batch_size = rollout_prompts(args, config.n_samples_per_prompt)
    if config.kl_in_reward is not None:  # ms-swift: the KL as a reward penalty (true) or as a loss term (false)
        if "use_kl_loss" in explicit and config.use_kl_loss == config.kl_in_reward:
            raise RlhfxError(f"--kl_in_reward {config.kl_in_reward} and --use_kl_loss {config.use_kl_loss} contradict "
                             "each other.", "keep one of them.")
        config.use_kl_loss = not config.kl_in_reward
    if config.prompt_max_len is None:
        config.prompt_max_len = args.max_length
    if config.top_k == -1:  # OpenRLHF's and vLLM's "off"
        config.top_k = 0
    _resolve_loss(config, args)
    _refuse_ignored(config, explicit)
    _check_chord(config, explicit)
    check_placement(config, explicit)
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
    if not 0 < config.top_p <= 1:
        raise RlhfxError(f"--top_p is {config.top_p}.", "use a value in (0, 1] (1 = off).")
    if config.top_k < 0:
        raise RlhfxError(f"--top_k is {config.top_k}.", "use 0 or -1 (off) or a positive number.")
    if config.dual_clip is not None and config.dual_clip <= 1:
        raise RlhfxError(f"--dual_clip is {config.dual_clip}.", "use a constant above 1 (e.g. 3), or leave it off.")
    if config.dual_clip is not None and config.dual_clip < 1 + config.cliprange_high:
        raise RlhfxError(f"--dual_clip (--delta) {config.dual_clip} is below 1 + --epsilon_high {config.cliprange_high}:"
                         " there the upper clip bounds the ratio already, and TRL's --delta would also cap the "
                         "positive advantages' ratio, which OpenRLHF's --dual_clip leaves alone.",
                         f"use a constant of at least {1 + config.cliprange_high:g} (e.g. 3), or leave it off.")
    if config.dynamic_sampling and config.advantage_estimator not in GROUP_ESTIMATORS:
        raise RlhfxError(f"--dynamic_sampling keeps the prompts whose samples' rewards differ, which needs a group "
                         f"estimator, not --advantage_estimator {config.advantage_estimator}.",
                         "use --rlhf_type grpo or rloo (or a group --advantage_estimator), or drop --dynamic_sampling.")
    if config.overlong_buffer_len is not None and not 0 < config.overlong_buffer_len <= config.generate_max_len:
        raise RlhfxError(f"--overlong_buffer_len {config.overlong_buffer_len} must be in (0, --generate_max_len "
                         f"{config.generate_max_len}]: the penalty falls over the last that many tokens.",
                         "use e.g. a quarter of --generate_max_len.")
    if config.enable_vllm_is_correction and config.engine != "vllm":
        raise RlhfxError("--enable_vllm_is_correction corrects for vLLM's log-probs differing from the trainer's, "
                         f"but the rollouts come from --engine {config.engine}, which samples with the policy itself.",
                         "use --engine vllm, or drop --enable_vllm_is_correction.")
    low_high = config.vllm_is_truncated_threshold
    if len(low_high) != 2 or not 0 <= low_high[0] <= 1 <= low_high[1]:
        raise RlhfxError(f"--vllm_is_truncated_threshold {' '.join(map(str, low_high))}: it takes LOW HIGH with "
                         "0 <= LOW <= 1 <= HIGH.", "e.g. 0.5 5 (OpenRLHF's default).")
    if config.kl_unbiased_gradient and not config.use_kl_loss:
        raise RlhfxError("--kl_unbiased_gradient changes the gradient of the KL loss term, but the KL is a reward "
                         "penalty in this run.", "add --use_kl_loss (grpo has it on), or drop --kl_unbiased_gradient.")
    if config.target_kl is not None and config.target_kl <= 0:
        raise RlhfxError(f"--target_kl is {config.target_kl}.", "use the sequence KL to steer to (e.g. 6), or leave "
                         "it out for a fixed --kl_coef.")
    if config.multi_turn_scheduler and config.uses_critic:
        raise RlhfxError(f"--multi_turn_scheduler with --advantage_estimator {config.advantage_estimator}: the critic's "
                         "values and GAE would run across the scheduler's inserted text, which is not trained.",
                         "use --rlhf_type grpo (or another estimator without a critic: rloo, reinforce).")
    if config.max_turns is not None and config.max_turns < 1:
        raise RlhfxError(f"--max_turns is {config.max_turns}.", "use 1 or more turns, or leave it out (no limit).")
    if config.max_resample_times < 0:
        raise RlhfxError(f"--max_resample_times is {config.max_resample_times}.", "use 0 or more rounds.")
    for name in ("rollout_batch_size", "micro_rollout_batch_size", "num_ppo_epochs", "generate_max_len",
                 "n_samples_per_prompt", "prompt_max_len", "kl_horizon"):
        if getattr(config, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(config, name)}.", "use a positive number.")


def _refuse_ignored(config: RLOptions, explicit: set) -> None:
    """A flag given for a setting this run does not have would change nothing: refused, naming what it needs."""
    for name, what in GAE_ONLY.items():
        if name in explicit and not config.uses_critic:
            raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} trains no critic, so --{name} "
                             f"({what}) does not apply.", f"drop --{name}, or use --advantage_estimator gae.")
    if "gamma" in explicit and config.advantage_estimator in GROUP_ESTIMATORS and config.gamma != 1:
        raise RlhfxError(f"--gamma {config.gamma}: --advantage_estimator {config.advantage_estimator} scores whole "
                         "sequences against their group and discounts nothing (gamma 1).",
                         "drop --gamma, or use --advantage_estimator gae or reinforce.")
    requires = {"kl_horizon": ("target_kl", "the adaptive KL controller"),
                "overlong_penalty_factor": ("overlong_buffer_len", "DAPO's overlong shaping"),
                "max_resample_times": ("dynamic_sampling", "dynamic sampling"),
                "vllm_is_correction_type": ("enable_vllm_is_correction", "the vLLM rollout correction"),
                "vllm_is_truncated_threshold": ("enable_vllm_is_correction", "the vLLM rollout correction"),
                "max_turns": ("multi_turn_scheduler", "multi-turn rollouts"),
                "completion_length_limit_scope": ("multi_turn_scheduler", "multi-turn rollouts")}
    for name, (needed, what) in requires.items():
        if name in explicit and not getattr(config, needed):
            raise RlhfxError(f"--{name} configures {what}, which is off in this run.", f"add --{needed}, or drop "
                             f"--{name}.")
    config.resolve_rewards(config.reward_func or [], config.external_plugins, explicit, config.generate_max_len)


CHORD_NEEDS = ("chord_sft_per_device_train_batch_size", "chord_mu_warmup_steps", "chord_mu_decay_steps",
               "chord_mu_peak", "chord_mu_valley")


def _check_chord(config: RLOptions, explicit: set) -> None:
    """CHORD's knobs act on its expert set only; with it, every one of them is needed (ms-swift has no default for
    them either: it stops at the first update without them)."""
    if not config.chord_sft_dataset:
        given = sorted(name for name in explicit if name.startswith("chord_")
                       and getattr(config, name) is not None and getattr(config, name) is not False)
        if given:
            raise RlhfxError(f"--{given[0]} configures CHORD's SFT loss on expert data, but no --chord_sft_dataset "
                             "is given, so it would change nothing.",
                             f"add --chord_sft_dataset (e.g. demo-sft), or drop --{given[0]}.")
        return
    missing = [f"--{name}" for name in CHORD_NEEDS if getattr(config, name) is None]
    if missing:
        raise RlhfxError(f"--chord_sft_dataset needs {', '.join(missing)}: CHORD's batch size and mu schedule have no "
                         "defaults (as in ms-swift).", "pass them, e.g. --chord_sft_per_device_train_batch_size 1 "
                         "--chord_mu_warmup_steps 0 --chord_mu_decay_steps 200 --chord_mu_peak 0.9 "
                         "--chord_mu_valley 0.05 (ms-swift's example); a constant mu: peak = valley.")
    for name in ("chord_mu_peak", "chord_mu_valley"):
        if not 0 <= getattr(config, name) <= 1:
            raise RlhfxError(f"--{name} is {getattr(config, name)}: mu is the SFT loss's share of the total.",
                             "use a value in [0, 1].")
    for name, low in (("chord_sft_per_device_train_batch_size", 1), ("chord_mu_warmup_steps", 0),
                      ("chord_mu_decay_steps", 0)):
        if getattr(config, name) < low:
            raise RlhfxError(f"--{name} is {getattr(config, name)}.", f"use {low} or more.")


# ms-swift's --loss_type for GRPO-style runs, as verl's --loss_agg_mode (ms-swift's dr_grpo also divides by the
# constant max completion length, which only scales the gradient); sapo also swaps the ratio clip for SAPO's gate,
# fipo weighs each token by its future KL, real replaces the policy loss (its mode aggregates the KL term)
SWIFT_LOSS_TYPES = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
                    "dr_grpo": "seq-mean-token-sum", "sapo": "seq-mean-token-mean", "fipo": "token-mean",
                    "real": "token-mean"}
# each loss type's own knobs: refused with another loss type
LOSS_KNOBS = {"sapo": ("tau_pos", "tau_neg"), "real": ("real_tau",),
              "fipo": ("fipo_decay_rate", "fipo_clip_range", "fipo_clip_high_only", "fipo_safety_threshold")}
# what REAL (a classification of whole samples) has no use for
NOT_REAL = {"cliprange": "REAL has no ratio clip", "cliprange_high": "REAL has no ratio clip",
            "eps_clip_low_high": "REAL has no ratio clip", "dual_clip": "REAL has no ratio clip",
            "enable_vllm_is_correction": "REAL's loss has no per-token terms to correct"}


def _resolve_loss(config: RLOptions, args) -> None:
    """The policy-loss flags and their OpenRLHF / ms-swift spellings, made one value each (conflicts refused)."""
    if config.importance_sampling_level:
        level = {"token": "ppo", "sequence": "gspo"}[config.importance_sampling_level]
        if "policy_loss" in args.explicit and config.policy_loss != level:
            raise RlhfxError(f"--policy_loss {config.policy_loss} and --importance_sampling_level "
                             f"{config.importance_sampling_level} ask for different losses.", "keep one of them.")
        config.policy_loss = level
    if config.loss_type:
        if config.loss_type not in SWIFT_LOSS_TYPES:
            raise RlhfxError(f"--loss_type {config.loss_type} is a DPO loss; online RL takes "
                             f"{', '.join(SWIFT_LOSS_TYPES)} (ms-swift's GRPO loss types).",
                             "use --loss_agg_mode token-mean | seq-mean-token-mean | seq-mean-token-sum, or drop it.")
        mode = SWIFT_LOSS_TYPES[config.loss_type]
        if config.loss_agg_mode not in (None, mode):
            raise RlhfxError(f"--loss_type {config.loss_type} means --loss_agg_mode {mode}, not "
                             f"{config.loss_agg_mode}.", "keep one of them.")
        config.loss_agg_mode = mode
    for loss_type, knobs in LOSS_KNOBS.items():
        given = [f"--{name}" for name in knobs if name in args.explicit]
        if given and config.loss_type != loss_type:
            raise RlhfxError(f"{' / '.join(given)} set{'s' if len(given) == 1 else ''} the loss that only --loss_type "
                             f"{loss_type} uses.", f"add --loss_type {loss_type}, or drop {' '.join(given)}.")
    if config.loss_type == "sapo":
        if config.dual_clip is not None:
            raise RlhfxError("--dual_clip bounds PPO's clipped loss; --loss_type sapo has no clip (a soft gate).",
                             "drop --dual_clip, or use another --loss_type.")
        if min(config.tau_pos, config.tau_neg) <= 0:
            raise RlhfxError(f"--tau_pos {config.tau_pos} / --tau_neg {config.tau_neg}: SAPO's gate temperatures "
                             "must be positive.", "use e.g. --tau_pos 1 --tau_neg 1.05 (the defaults).")
    if config.loss_type == "fipo":
        _check_fipo(config)
    if config.loss_type == "real":
        _check_real(config, args)
    if config.loss_agg_mode is None:
        config.loss_agg_mode = "seq-mean-token-mean" if config.policy_loss == "gspo" else "token-mean"
    if config.eps_clip_low_high is not None:
        if len(config.eps_clip_low_high) != 2 or {"cliprange", "cliprange_high"} & args.explicit:
            raise RlhfxError(f"--eps_clip_low_high {' '.join(map(str, config.eps_clip_low_high))}: it takes two "
                             "values, LOW HIGH, and replaces --cliprange / --cliprange_high.",
                             "give LOW HIGH, or those two flags.")
        config.cliprange, config.cliprange_high = config.eps_clip_low_high
    if config.cliprange_high is None:
        config.cliprange_high = config.cliprange
    if not (0 < config.cliprange < 1 and config.cliprange_high > 0):
        raise RlhfxError(f"The ratio clip is [1 - {config.cliprange}, 1 + {config.cliprange_high}].",
                         "use 0 < --cliprange < 1 and --cliprange_high > 0 (e.g. 0.2 and 0.28).")


def _check_fipo(config: RLOptions) -> None:
    if config.fipo_decay_rate <= 0:
        raise RlhfxError(f"--fipo_decay_rate is {config.fipo_decay_rate}: it is the future KL's half-life in tokens.",
                         "use a positive number (32, the default).")
    if config.fipo_clip_range < 0 or (config.fipo_clip_range >= 1 and not config.fipo_clip_high_only):
        raise RlhfxError(f"--fipo_clip_range {config.fipo_clip_range}: the influence weight is clipped to [1 - c, "
                         "1 + c], which needs 0 <= c < 1 (0: no clip).", "use e.g. 0.2 (the default).")


def _check_real(config: RLOptions, args) -> None:
    """REAL classifies the samples of each prompt by the sign of their advantage: it needs groups, whole in every
    micro batch, and none of the PPO loss's knobs."""
    if config.real_tau <= 0:
        raise RlhfxError(f"--real_tau is {config.real_tau}.", "use a positive temperature (0.5, the default).")
    if config.advantage_estimator not in GROUP_ESTIMATORS:
        raise RlhfxError(f"--loss_type real classifies the samples of each prompt against each other, which needs a "
                         f"group estimator, not --advantage_estimator {config.advantage_estimator}.",
                         "use --rlhf_type grpo or rloo (or a group --advantage_estimator).")
    stray = [name for name in NOT_REAL if name in args.explicit]
    if stray:
        raise RlhfxError(f"--{stray[0]} does not apply to --loss_type real: {NOT_REAL[stray[0]]}.",
                         f"drop --{stray[0]}.")
    if config.policy_loss == "gspo":
        raise RlhfxError("--importance_sampling_level sequence (--policy_loss gspo) does not apply to --loss_type "
                         "real: its logits are each sample's mean log-ratio already.", "drop it.")
    if "scale_rewards" in args.explicit and config.scale_rewards not in ("none", "false"):
        raise RlhfxError(f"--scale_rewards {config.scale_rewards} with --loss_type real: REAL reads only the sign of "
                         "each advantage (ms-swift sets none).", "drop --scale_rewards, or give none.")
    config.scale_rewards = "none"
    if args.batch_size % config.n_samples_per_prompt:
        raise RlhfxError(f"--per_device_train_batch_size {args.batch_size} is not a multiple of --num_generations "
                         f"{config.n_samples_per_prompt}: REAL classifies each prompt's samples within one micro "
                         "batch.", f"use a multiple of {config.n_samples_per_prompt}.")


def check_args(args, config: RLOptions) -> None:
    """Called by `rlhfx rlhf` before anything loads, after the options: the engine can start, the reward sources
    exist (what the flags name, rather than how they combine)."""
    from rlhfx.algos.rl.multi_turn import check_scheduler
    from rlhfx.rewards.builtin import load_plugins
    from rlhfx.rewards.sources import check_reward_sources

    check_vllm_flags(args)
    if args.engine == "vllm" and args.vllm_mode != "server":
        from rlhfx.engines import check_engine_available

        check_engine_available("vllm")
    if args.ray_address:  # the cluster can hold the placement, before any model loads
        check_resources(config, connect(args.ray_address).cluster_resources())
    load_plugins(args.external_plugins)
    if args.multi_turn_scheduler:  # after the plugins, which may register it
        check_scheduler(args.multi_turn_scheduler)
    check_reward_sources(args.reward_model or [], args.reward_func or [], args.remote_rm_url or [], args.reward_weights,
                         config)


VLLM_ONLY = ("vllm_tensor_parallel_size", "vllm_max_model_len", "sleep_level", "offload_model", "offload_optimizer",
             "vllm_enable_lora")
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
    if args.ray_address:  # the GPUs that count are the Ray cluster's (rlhfx.algos.rl.ray.placement.check_resources)
        return
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

