"""Each algorithm's own flags, TRL-style: one dataclass per algorithm (or family), one field per flag.

A field carries its default, help and seed spellings (`option(...)`); rlhfx.arguments generates the
"algorithm" flag rows, the per-algorithm `--help` and docs/cli.md from these fields, so a flag is defined
once, and a flag several algorithms take (beta) states each one's default. `rlhfx rlhf` builds the
options from the parsed flags and calls `validate` before any model loads; the trainer gets them typed
(ctx.options). Nothing heavy is imported here: `rlhfx --help` reads these classes.
"""

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import NamedTuple

from rlhfx.errors import RlhfxError

RLHF = ("rlhf",)


def option(default, help: str, *, aliases: tuple[str, ...] = (), choices: tuple | None = None,
           group: str = "algorithm", commands: tuple[str, ...] = RLHF):
    """A dataclass field that is also a flag: `--NAME` (and `--ALIAS`) of `rlhfx rlhf`."""
    metadata = {"help": help, "aliases": aliases, "choices": choices, "group": group, "commands": commands}
    if isinstance(default, list):  # a dataclass field takes no mutable default
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(f) -> object:
    """An option field's default (a list one comes from its factory)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def in_range(name: str, value: float, low: float, high: float | None, hint: str, *, open_high: bool = False,
             open_low: bool = False) -> None:
    """--NAME within [low, high] (ends open where asked; no high: unbounded above), else an error with `hint`."""
    too_low = value <= low if open_low else value < low
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        left, right = "(" if open_low else "[", ")" if open_high or high is None else "]"
        raise RlhfxError(f"--{name} must be in {left}{low:g}, {'inf' if high is None else format(high, 'g')}{right}, "
                         f"got {value}.", hint)


def positive_beta(name: str, beta: float, meaning: str = "it scales the preference term, which a negative beta "
                                                           "turns towards the rejected answers") -> None:
    if not beta > 0:
        raise RlhfxError(f"--beta is {beta}; for --rlhf_type {name} it must be above 0: {meaning}.",
                         "leave it out for the default, or pass a positive value such as 0.1.")


class JointSFT(NamedTuple):
    """A second, SFT data set that an algorithm trains on beside --dataset; the runner loads and encodes it."""

    flag: str  # the flag naming it (its errors and drop counts say this name)
    datasets: list[str]
    max_len: int | None = None  # its longest tokenized row (None: --max_length)
    validates: bool = True  # its validation rows (its --split_dataset_ratio share, a bundled set's own) evaluate


@dataclass
class Options:
    """Base of every algorithm's options."""

    def validate(self, name: str, args) -> None:
        """Checks of these options (and of general flags they depend on, in `args`); RlhfxError on bad input."""

    def joint_sft(self) -> JointSFT | None:
        """The SFT data set trained jointly with --dataset, if these options name one."""
        return None

    def loss_kwargs(self) -> dict:
        """Keyword arguments of the algorithm's loss function in rlhfx/algos/losses.py."""
        return asdict(self)


PREFERENCE_BETA = "Strength of the preference loss (the inverse temperature of the implicit reward)."


@dataclass
class BetaOptions(Options):
    """A pairwise loss whose only knob is beta."""

    beta: float = option(0.1, PREFERENCE_BETA)

    def validate(self, name, args):
        positive_beta(name, self.beta)


@dataclass
class DPOLossOptions(BetaOptions):
    """The DPO loss (sigmoid, cDPO, IPO) of dpo and of the joint SFT + DPO modes."""

    loss_type: str = option("sigmoid", "DPO: sigmoid or ipo (log-ratios averaged per token, as TRL and ms-swift).",
                            choices=("sigmoid", "ipo"))
    ipo: bool = option(False, "OpenRLHF's IPO: its formula, on summed log-ratios (--loss_type ipo averages them per "
                              "token instead).")
    label_smoothing: float = option(0.0, "cDPO: assumed share of flipped preference labels (0 <= e < 0.5).")

    def validate(self, name, args):
        super().validate(name, args)
        if self.loss_type not in ("sigmoid", "ipo"):
            raise RlhfxError(f"--loss_type {self.loss_type} is an online RL loss; --rlhf_type {name} takes "
                             "sigmoid or ipo.", "use --loss_type sigmoid or ipo, or drop it.")
        if self.ipo and "loss_type" in args.explicit and self.loss_type != "ipo":
            raise RlhfxError(f"--ipo and --loss_type {self.loss_type} ask for two different losses.", "keep one of them.")
        in_range("label_smoothing", self.label_smoothing, 0.0, 0.5,
                 "it is the assumed share of flipped labels (cDPO); 0.1 is a common choice.", open_high=True)
        if self.loss_kwargs()["loss_type"] != "sigmoid" and self.label_smoothing:
            raise RlhfxError("--label_smoothing (cDPO) applies to the sigmoid loss, not to IPO.",
                             "drop --label_smoothing or use --loss_type sigmoid.")

    def loss_kwargs(self):
        """OpenRLHF's --ipo is IPO on summed log-ratios (its formula, so its recipes keep their objective)."""
        return {"beta": self.beta, "loss_type": "ipo_sum" if self.ipo else self.loss_type,
                "label_smoothing": self.label_smoothing}


@dataclass
class DPOOptions(DPOLossOptions):
    rpo_alpha: float = option(0.0, "Weight of the NLL term on chosen responses (RPO; OpenRLHF --nll_loss_coef).",
                              aliases=("nll_loss_coef",))

    def validate(self, name, args):
        super().validate(name, args)
        in_range("rpo_alpha", self.rpo_alpha, 0.0, None, "0 (the default) is plain DPO.")

    def loss_kwargs(self):
        return {**super().loss_kwargs(), "rpo_alpha": self.rpo_alpha}


NLL_WEIGHT = "Weight of the NLL term on chosen responses."


@dataclass
class CPOOptions(Options):
    beta: float = option(0.1, PREFERENCE_BETA)
    cpo_alpha: float = option(1.0, NLL_WEIGHT)

    def validate(self, name, args):
        positive_beta(name, self.beta)
        in_range("cpo_alpha", self.cpo_alpha, 0.0, None, "1.0 (cpo's default) keeps the NLL term on; 0 drops it.")


@dataclass
class SimPOOptions(Options):
    """cpo_alpha defaults to 0 here (original SimPO), unlike ms-swift's 1.0: ALGORITHMS.md is the contract."""

    beta: float = option(2.0, PREFERENCE_BETA)
    simpo_gamma: float = option(1.0, "SimPO target reward margin gamma.")
    cpo_alpha: float = option(0.0, NLL_WEIGHT)

    def validate(self, name, args):
        positive_beta(name, self.beta, "SimPO uses 2.0 to 10")
        in_range("cpo_alpha", self.cpo_alpha, 0.0, None, "0 (the default) is the original SimPO.")

    def loss_kwargs(self):
        return {"beta": self.beta, "gamma": self.simpo_gamma, "cpo_alpha": self.cpo_alpha}


@dataclass
class ORPOOptions(Options):
    beta: float = option(0.1, "ORPO's lambda: weight of the odds-ratio term added to the NLL (ms-swift's --beta).")

    def validate(self, name, args):
        in_range("beta", self.beta, 0.0, None, "ORPO's lambda: 0.1 is the usual value; 0 is plain SFT.")


@dataclass
class KTOOptions(Options):
    beta: float = option(0.1, PREFERENCE_BETA)
    desirable_weight: float = option(1.0, "KTO weight of desirable examples.")
    undesirable_weight: float = option(1.0, "KTO weight of undesirable examples.")
    desirable_threshold: float | None = option(
        None, "KTO data whose --label_key column is a score (e.g. a 1-10 rating): rows scoring at least this are "
              "desirable, the others undesirable.", group="data", commands=("rlhf", "data"))

    def validate(self, name, args):
        positive_beta(name, self.beta)
        for flag in ("desirable_weight", "undesirable_weight"):
            in_range(flag, getattr(self, flag), 0.0, None, "weights are usually between 1 and 2.", open_low=True)

    def loss_kwargs(self):
        return {"beta": self.beta, "desirable_weight": self.desirable_weight,
                "undesirable_weight": self.undesirable_weight}


@dataclass
class PRMOptions(Options):
    placeholder_token: str = option("<|step|>", "PRM: the token that marks the end of each reasoning step.")
    reward_tokens: list[str] | None = option(
        None, "PRM: tokens that stand for the step labels (e.g. + -); default: hard 0/1 labels.")

    def validate(self, name, args):
        if self.reward_tokens is not None and len(self.reward_tokens) != 2:
            raise RlhfxError(f"--reward_tokens needs exactly two tokens (good, bad), got {self.reward_tokens}.",
                             "e.g. `--reward_tokens + -`; leave it out for a binary head.")


ONLINE = "online rl"
GENERATE_MAX_LEN = ("max_new_tokens", "max_completion_length", "response_length")
TEACHER = "KD and GKD: the teacher (folder, hub id or `tiny`); it must share the student's tokenizer vocabulary."


def check_teacher(name: str, teacher_model: str | None) -> None:
    if not teacher_model:
        raise RlhfxError(f"--rlhf_type {name} needs a teacher.", "pass --teacher_model (a folder, hub id or `tiny`).")


@dataclass
class KDOptions(Options):
    teacher_model: str | None = option(None, TEACHER)
    kd_coef: float = option(0.4, "KD: weight of the teacher cross-entropy; the data's NLL gets 1 - kd_coef.")
    teacher_offload: bool = option(False, "KD: keep the teacher in CPU memory, on the accelerator only for its "
                                          "forward pass.")

    def validate(self, name, args):
        check_teacher(name, self.teacher_model)
        in_range("kd_coef", self.kd_coef, 0.0, 1.0, "0.4 is OpenRLHF's example value.")


@dataclass
class GKDOptions(Options):
    teacher_model: str | None = option(None, TEACHER)
    beta: float = option(0.5, "The generalised JSD's interpolation (0 forward KL, 1 reverse KL).")
    lmbda: float = option(0.5, "GKD: share of batches whose completions the student generates (on-policy); the rest "
                                "use the data's responses.")
    sft_alpha: float = option(0.0, "GKD: weight of the NLL of the data's responses added to the distillation loss.")
    temperature: float = option(1.0, "Sampling temperature of the student's on-policy completions.", group=ONLINE)
    generate_max_len: int = option(64, "Most tokens generated per on-policy completion.", aliases=GENERATE_MAX_LEN,
                                   group=ONLINE)

    def validate(self, name, args):
        check_teacher(name, self.teacher_model)
        for flag in ("lmbda", "beta"):
            in_range(flag, getattr(self, flag), 0.0, 1.0, "0.5 is ms-swift's and TRL's default.")


JOINT = "alright, maxright, mix"


@dataclass
class XrightOptions(DPOLossOptions):
    """The joint SFT + DPO modes (alright, mix): DPO's loss plus a second, SFT data set."""

    sft_dataset: list[str] | None = option(None, "SFT datasets trained jointly with the preference --dataset.")
    sft_batch_size: int | None = option(None, "Per-device micro batch size of the --sft_dataset batches "
                                              "(default: --batch_size).", aliases=("sft_micro_train_batch_size",))
    sft_max_samples: int | None = option(None, "Cap on --sft_dataset rows.")
    sft_max_len: int | None = option(None, "Longest tokenized --sft_dataset row (default: --max_length).")
    lambd: float = option(0.5, "Weight (ALRIGHT: probability) of the DPO objective; SFT gets 1 - lambd.",
                          aliases=("lambda_",))

    def validate(self, name, args):
        super().validate(name, args)
        in_range("lambd", self.lambd, 0.0, 1.0,
                 "it is the weight (ALRIGHT: the probability) of the DPO objective; 0.5 weighs both alike.")
        if not self.sft_dataset:
            raise RlhfxError(f"--rlhf_type {name} needs an SFT data set.", "pass --sft_dataset (e.g. demo-sft).")

    def joint_sft(self):
        return JointSFT("sft_dataset", self.sft_dataset, self.sft_max_len)


@dataclass
class MaxrightOptions(XrightOptions):
    sft_opt: float = option(0.0, "Optimum (lowest reachable) SFT loss for MAXRIGHT's gaps.")
    dpo_opt: float = option(0.0, "Optimum (lowest reachable) DPO loss for MAXRIGHT's gaps.")
    max_eval_steps: int = option(10, "MAXRIGHT: refresh both loss gaps by evaluation every N steps.")

    def validate(self, name, args):
        super().validate(name, args)
        if self.max_eval_steps < 1:
            raise RlhfxError(f"--max_eval_steps must be >= 1, got {self.max_eval_steps}.",
                             "it is how often (in steps) MAXRIGHT re-evaluates both losses; 10 is the default.")


def online(default, help: str, **kwargs):
    """An online RL flag (the "online rl" group of --help)."""
    return option(default, help, group=ONLINE, **kwargs)


REWARD_KNOB_COMMANDS = ("rlhf", "sample")
# each named reward's knobs, by the prefix of their names
KNOB_PREFIXES = {"cosine_": "cosine", "repetition_": "repetition", "soft_": "soft_overlong"}


def reward_knob(default, help: str):
    """A knob of a named rule-based reward: a flag of online RL and of `rlhfx sample` alike."""
    return option(default, help, group="reward knobs", commands=REWARD_KNOB_COMMANDS)


@dataclass
class RewardOptions(Options):
    """The knobs of the named rewards (rlhfx.rewards.builtin reads them as `self.args.NAME`), one definition for online
    RL (RLOptions extends this class) and `rlhfx sample` (which builds this class). `resolve_rewards` gives the length
    knobs left unset the run's most tokens per completion (ms-swift's --max_completion_length)."""

    cosine_min_len_value_wrong: float = reward_knob(-0.5, "cosine reward: wrong answer of length 0.")
    cosine_max_len_value_wrong: float = reward_knob(0.0, "cosine reward: wrong answer of length --cosine_max_len.")
    cosine_min_len_value_correct: float = reward_knob(1.0, "cosine reward: correct answer of length 0.")
    cosine_max_len_value_correct: float = reward_knob(0.5, "cosine reward: correct answer of length --cosine_max_len.")
    cosine_max_len: int | None = reward_knob(None, "cosine reward: the length L of the cosine schedule (default: "
                                                   "--max_completion_length; sample: --max_new_tokens).")
    repetition_n_grams: int = reward_knob(3, "repetition reward: n-gram size (words).")
    repetition_max_penalty: float = reward_knob(-1.0, "repetition reward: the penalty of a completion that is all "
                                                      "repeats.")
    soft_max_length: int | None = reward_knob(None, "soft_overlong reward: L_max (default: --max_completion_length; "
                                                    "sample: --max_new_tokens).")
    soft_cache_length: int | None = reward_knob(None, "soft_overlong reward: L_cache; completions longer than L_max - "
                                                      "L_cache lose up to 1 linearly.")

    def validate(self, name, args):
        """`rlhfx sample`: one --reward_func, answers of at most --max_new_tokens."""
        self.resolve_rewards([args.reward_func] if args.reward_func else [], [], args.explicit, args.max_new_tokens)

    def resolve_rewards(self, rewards: list[str], plugins, explicit: set, most_tokens: int) -> None:
        """The length knobs filled in; a knob given for a reward the run does not use is refused (unless a plugin,
        whose rewards may read any knob, is loaded)."""
        self.cosine_max_len = self.cosine_max_len or most_tokens
        self.soft_max_length = self.soft_max_length or most_tokens
        for name in sorted(explicit & {f.name for f in fields(RewardOptions)}):
            reward = next(r for prefix, r in KNOB_PREFIXES.items() if name.startswith(prefix))
            if reward not in rewards and not plugins:
                raise RlhfxError(f"--{name} configures the {reward} reward, which is not among --reward_funcs.",
                                 f"add {reward} to --reward_funcs, or drop --{name}.")


ESTIMATOR_HELP = ("gae (PPO with a critic), reinforce (REINFORCE++), reinforce_baseline, rloo, group_norm (GRPO), "
                  "dr_grpo; ms-swift's names: grpo = group_norm, reinforce_plus_plus = reinforce_baseline "
                  "(REINFORCE++-baseline), rloo = rloo.")
ESTIMATOR_CHOICES = ("gae", "reinforce", "reinforce_baseline", "rloo", "group_norm", "dr_grpo", "grpo",
                     "reinforce_plus_plus")
VLLM_SERVER = "--vllm_mode server: "


@dataclass
class RLOptions(RewardOptions):
    """ppo and its presets (grpo, rloo, reinforce_pp: the subclasses below change defaults only): the online RL
    trainer's flags. `validate` (rlhfx.algos.rl.config.resolve) also folds the OpenRLHF / ms-swift spellings
    (--eps_clip_low_high, --loss_type, --importance_sampling_level, --kl_in_reward, --steps_per_generation)
    into the fields the trainer reads, and refuses a flag that has no effect in this run."""

    # the algorithm, its rollouts and its batches
    advantage_estimator: str = online("gae", ESTIMATOR_HELP, choices=ESTIMATOR_CHOICES)
    n_samples_per_prompt: int = online(1, "Responses sampled per prompt (group estimators need > 1).",
                                       aliases=("num_generations",))
    rollout_batch_size: int = online(16, "Prompts per rollout (one training step).")
    micro_rollout_batch_size: int = online(16, "Samples per forward pass when computing log-probs, values and rewards "
                                               "of a rollout.", aliases=("local_rollout_forward_batch_size",))
    steps_per_generation: int | None = online(
        None, "TRL / ms-swift: one rollout of --batch_size x N completions feeds N micro batches (N / "
              "--gradient_accumulation_steps optimizer steps); sets --rollout_batch_size to batch_size x N / "
              "--num_generations. rlhfx counts --max_steps in rollouts.")
    async_generate: bool = online(False, "ms-swift: generate the next rollout while training on this one (needs its "
                                         "vLLM server mode); rlhfx rolls out synchronously, so only false is taken.")
    num_ppo_epochs: int = online(1, "Passes over each rollout's samples (OpenRLHF's PPO --max_epochs; that name here "
                                    "is --num_train_epochs, the passes over the prompts).",
                                 aliases=("ppo_epochs", "num_iterations"))
    generate_max_len: int = online(64, "Most tokens generated per response.", aliases=GENERATE_MAX_LEN)
    prompt_max_len: int | None = online(None, "Longest prompt in tokens; longer prompts are dropped and counted "
                                              "(default: --max_length).")
    # multi-turn rollouts (rlhfx.algos.rl.multi_turn)
    multi_turn_scheduler: str | None = online(
        None, "ms-swift: generate each sample over several turns; after each turn this scheduler ends the conversation "
              "or adds to it (a message, or a tip appended to the answer) and the model continues from the whole "
              "conversation. Built in: math_tip_trick; more registered by --external_plugins (multi_turns['name'] = "
              "MyScheduler). Only the model's tokens are trained; the rewards score the final answer.")
    max_turns: int | None = online(None, "--multi_turn_scheduler: most turns per conversation (default: until the "
                                         "scheduler ends it).")
    completion_length_limit_scope: str = online(
        "per_round", "--multi_turn_scheduler: --max_completion_length limits each turn (per_round) or all the tokens "
                     "after the prompt together, inserted ones included (total).", choices=("per_round", "total"))
    # the rollout engine
    engine: str = online("pt", "Rollout engine: pt (the policy generates) or vllm (weights pushed every step; needs "
                               "the vllm extra).", choices=("pt", "vllm"))
    use_vllm: bool = online(False, "ms-swift: roll out with vLLM (= --engine vllm with --vllm_mode colocate).")
    vllm_mode: str | None = online(None, "ms-swift/TRL: colocate (vLLM inside the training process: --engine vllm) "
                                         "or server (rollouts from a separate `rlhfx rollout` server, which gets the "
                                         "policy's weights after every update).", choices=("colocate", "server"))
    vllm_server_host: str = online("0.0.0.0", VLLM_SERVER + "host of the `rlhfx rollout` server (ignored with "
                                              "--vllm_server_base_url).")
    vllm_server_port: int = online(8000, VLLM_SERVER + "port of the `rlhfx rollout` server (ignored with "
                                         "--vllm_server_base_url).")
    vllm_server_base_url: str | None = online(None, VLLM_SERVER + "the server's URL, e.g. http://10.0.0.2:8000 "
                                                    "(replaces host and port).")
    vllm_server_timeout: float = online(240.0, VLLM_SERVER + "seconds to wait for the server to answer before the "
                                               "run stops (it may still be loading).")
    vllm_check_weights_every: int = online(1, VLLM_SERVER + "after every Nth weight push (the first always), check "
                                              "that the server's greedy answer to a fixed prompt equals the policy's "
                                              "own (0: never).")
    vllm_gpu_memory_utilization: float = online(0.4, "vllm rollouts on a GPU: share of its memory for vLLM (the rest "
                                                     "trains).")
    vllm_tensor_parallel_size: int = online(1, "vllm rollouts: GPUs the vLLM engine splits the model over (tensor "
                                               "parallel).")
    vllm_max_model_len: int | None = online(None, "vllm rollouts: longest prompt + response the engine holds "
                                                  "(default: the model's).")
    sleep_level: int = online(0, "vllm rollouts on a GPU: between rollouts vLLM releases its KV cache (1) and also "
                                 "its weights (2), giving the memory to training (0: keep).", choices=(0, 1, 2))
    vllm_enable_sleep: bool = online(False, "TRL: vLLM's sleep mode between rollouts, releasing its KV cache to "
                                            "training (= --sleep_level 1; GPU only).",
                                     aliases=("vllm_enable_sleep_mode",))
    vllm_enable_lora: bool = online(False, "ms-swift: vLLM loads the LoRA adapter instead of merged weights (a faster "
                                           "weight sync). rlhfx pushes the merged weights every step, which samples "
                                           "the same policy; accepted with a note.")
    offload_model: bool = online(False, "vllm rollouts on a GPU: move the policy and reference to CPU memory while "
                                        "vLLM generates.")
    offload_optimizer: bool = online(False, "vllm rollouts on a GPU: move the optimizer states to CPU memory while "
                                            "vLLM generates.")
    # Ray placement (rlhfx.algos.rl.ray; OpenRLHF's flags): each role's processes on placement groups of "slots",
    # a slot being one GPU (with --ray_cpus_per_slot CPUs) on a GPU cluster, --ray_cpus_per_slot CPUs without one
    ray_address: str | None = online(None, "Run the roles as Ray actors: local (start a Ray cluster on this machine), "
                                           "auto (the running one, as under `ray job submit`) or HOST:PORT (default: "
                                           "no Ray; torchrun ranks). Needs `pip install 'rlhfx[ray]'`.")
    ray_cpus_per_slot: float = online(1.0, "Ray: CPUs in each slot (a GPU's bundle; without GPUs a slot is only these "
                                           "CPUs, so the same placement runs on a laptop; fractions allowed).")
    actor_num_nodes: int = online(1, "Ray: nodes of the actor group (its data-parallel ranks).")
    actor_num_gpus_per_node: int = online(1, "Ray: slots per node of the actor group.")
    critic_num_nodes: int | None = online(None, "Ray: nodes of the critic group (gae), which trains beside the actor "
                                                "group on slots of its own (default: the actor group's count; with "
                                                "--colocate_critic_reward the reward group's).")
    critic_num_gpus_per_node: int | None = online(None, "Ray: slots per node of the critic group (gae; default as "
                                                        "--critic_num_nodes).")
    ref_num_nodes: int = online(1, "Ray: nodes of the reference model group.")
    ref_num_gpus_per_node: int = online(1, "Ray: slots per node of the reference model group.")
    reward_num_nodes: int = online(1, "Ray: nodes of the reward model group (--reward_model).")
    reward_num_gpus_per_node: int = online(1, "Ray: slots per node of the reward model group (--reward_model).")
    vllm_num_engines: int = online(1, "Ray: rollout engine actors (each --vllm_tensor_parallel_size slots); the "
                                      "prompts are split over them.")
    vllm_sync_backend: str | None = online(None, "Ray: how actor rank 0 broadcasts new weights to the engines: nccl "
                                                 "(GPU to GPU) or gloo (through host memory). Default: nccl on GPUs, "
                                                 "gloo on CPUs and with --colocate_all_models.",
                                           choices=("nccl", "gloo"))
    colocate_actor_ref: bool = online(False, "Ray: the reference model shares the actor group's slots (same counts).")
    colocate_critic_reward: bool = online(False, "Ray: the critic group shares the reward model group's slots (same "
                                                 "counts; gae with --reward_model).")
    colocate_all_models: bool = online(False, "Ray: every role (actor, critic, reference, reward models, engines) "
                                              "shares the actor group's slots (same counts).")
    # sampling
    temperature: float = online(1.0, "Sampling temperature of rollouts; the update's log-probs are of logits / "
                                     "temperature, the distribution sampled from.")
    top_p: float = online(1.0, "Nucleus sampling of rollouts (1 = off).")
    top_k: int = online(0, "Sample rollouts among the k most likely tokens (0 or -1 = off).")
    log_completions: bool = online(False, "Write every rollout's prompts, completions and rewards to "
                                          "<output_dir>/completions.jsonl.")
    # the KL to the reference
    kl_coef: float = online(0.01, "KL coefficient (initial value with --target_kl).", aliases=("init_kl_coef",))
    beta: float | None = option(None, "ms-swift's name of --kl_coef.")  # made kl_coef by training/swift_flags
    kl_estimator: str = online("k1", "Per-token KL estimator.", choices=("k1", "k2", "k3"))
    use_kl_loss: bool = online(False, "KL as a loss term instead of a reward penalty.")
    kl_in_reward: bool | None = online(None, "ms-swift: true = KL as a reward penalty, false = KL as a loss term (the "
                                             "opposite of --use_kl_loss).")
    target_kl: float | None = online(None, "Adaptive KL: the sequence KL the coefficient steers to (default: fixed "
                                           "coefficient).")
    kl_horizon: int = online(10000, "Adaptive KL horizon (samples); needs --target_kl.")
    kl_unbiased_gradient: bool = online(False, "With --use_kl_loss: keep the estimator's value but take the unbiased "
                                               "gradient of KL(pi || ref), importance-weighted by pi / pi_old "
                                               "(OpenRLHF --algo.kl.unbiased_gradient).",
                                        aliases=("algo.kl.unbiased_gradient",))
    # the policy loss
    cliprange: float = online(0.2, "PPO ratio clip eps: rho is clipped to [1 - eps, 1 + eps_high].",
                              aliases=("eps_clip", "epsilon"))
    cliprange_high: float | None = online(None, "Upper ratio clip eps_high (DAPO's clip-higher, e.g. 0.28; default: "
                                                "--cliprange).", aliases=("eps_clip_high", "epsilon_high"))
    eps_clip_low_high: list[float] | None = online(None, "OpenRLHF: the lower and upper ratio clip, LOW HIGH (= "
                                                         "--cliprange LOW --cliprange_high HIGH).")
    dual_clip: float | None = online(None, "Dual-clip constant c >= 1 + --cliprange_high bounding the loss of "
                                           "negative advantages: their ratio counts at most c (TRL / ms-swift's "
                                           "--delta, two-sided GRPO) (default: off).", aliases=("delta",))
    policy_loss: str = online("ppo", "ppo (token importance ratio) or gspo (one ratio per sequence, exp of the mean "
                                     "token log-ratio; its loss defaults to seq-mean-token-mean).",
                              aliases=("policy_loss_type",), choices=("ppo", "gspo"))
    importance_sampling_level: str | None = online(None, "ms-swift's spelling of --policy_loss: token = ppo, "
                                                         "sequence = gspo.", choices=("token", "sequence"))
    loss_agg_mode: str | None = online(
        None, "How the per-token policy loss becomes one number over the optimizer batch: token-mean (every token "
              "weighs the same; DAPO), seq-mean-token-mean (every sequence weighs the same; GRPO), seq-mean-token-sum "
              "(Dr. GRPO) (default: token-mean; gspo seq-mean-token-mean; ms-swift's --loss_type picks one).",
        choices=("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"))
    loss_type: str | None = option(None, "Online RL (ms-swift's names for --loss_agg_mode): grpo = "
                                         "seq-mean-token-mean, bnpo and dapo = token-mean, dr_grpo = "
                                         "seq-mean-token-sum; sapo = seq-mean-token-mean with SAPO's soft gate "
                                         "(temperatures tau_pos, tau_neg) in place of the ratio clip; fipo = "
                                         "token-mean with each token's loss weighted by its future KL (--fipo_*); "
                                         "real = REAL's in-group classification of the samples by the sign of "
                                         "their advantage (--real_tau) in place of the PPO loss.",
                                   choices=("grpo", "bnpo", "dr_grpo", "dapo", "sapo", "fipo", "real"))
    tau_pos: float = online(1.0, "--loss_type sapo: temperature of the gate for positive advantages; the loss weighs "
                                 "rho by sigmoid(tau (rho - 1)) 4 / tau, whose slope is 1 at rho = 1 and fades faster "
                                 "away from 1 for a larger tau.")
    tau_neg: float = online(1.05, "--loss_type sapo: temperature of the gate for negative advantages (above "
                                  "--tau_pos damps them more).")
    fipo_decay_rate: float = online(32.0, "--loss_type fipo: half-life in tokens of the future KL's discount "
                                          "(gamma = 2^(-1 / rate)).")
    fipo_clip_range: float = online(0.2, "--loss_type fipo: c, the influence weight exp(future KL) is clipped to "
                                         "[1, 1 + c] ([1 - c, 1 + c] with --fipo_clip_high_only false; 0: no clip).")
    fipo_clip_high_only: bool = online(True, "--loss_type fipo: clip the influence weight to [1, 1 + "
                                             "--fipo_clip_range] (false: [1 - c, 1 + c]).")
    fipo_safety_threshold: float = online(4.0, "--loss_type fipo: tokens with a negative advantage and a ratio above "
                                               "this keep an influence weight within [0.8, 1] (inf: off).")
    real_tau: float = online(0.5, "--loss_type real: temperature of REAL's classification logits (the gradient "
                                  "weight of a sample is at most 1 / tau).")
    entropy_coef: float = online(0.0, "Entropy bonus weight (the entropy is logged either way).")
    # DAPO's and OpenRLHF's rollout shaping
    dynamic_sampling: bool = online(False, "DAPO: keep only prompts whose samples' rewards differ (the others have "
                                           "zero advantages) and top the batch up with further prompts (group "
                                           "estimators).", aliases=("dynamic_sample",))
    max_resample_times: int = online(3, "--dynamic_sampling: most extra rounds of --rollout_batch_size prompts per "
                                        "step; a batch still short trains as it is.")
    overlong_penalty_factor: float = online(1.0, "The overlong penalty at --generate_max_len tokens (needs "
                                                 "--overlong_buffer_len).")
    overlong_buffer_len: int | None = online(None, "DAPO overlong shaping: the reward falls linearly by up to "
                                                   "--overlong_penalty_factor over the last this many of "
                                                   "--generate_max_len tokens (default: off).")
    overlong_filter: bool = online(False, "ms-swift: completions cut at --generate_max_len are left out of the loss "
                                          "(they still count in their group's baseline).")
    enable_vllm_is_correction: bool = online(False, "OpenRLHF: correct the policy loss for vLLM sampling from a "
                                                    "slightly different distribution than the trainer computes, with "
                                                    "vLLM's own log-probs (--engine vllm).")
    vllm_is_correction_type: str = online("tis", "tis: weight each token by pi_old / pi_vllm clamped to the "
                                                 "thresholds; icepop: drop tokens whose ratio is outside them.",
                                          choices=("tis", "icepop"))
    vllm_is_truncated_threshold: list[float] = online([0.5, 5.0], "LOW HIGH bounds of the ratio pi_old / pi_vllm.")
    # rewards and advantages
    gamma: float = online(1.0, "Discount (gae, reinforce; group estimators use 1).")
    lam: float = online(0.95, "GAE lambda.")
    whiten_rewards: bool = online(False, "Scale the token rewards by their std over the rollout before GAE (mean "
                                         "kept).")
    normalize_reward: bool = online(False, "Z-score rewards with the running mean and std of all rewards seen.")
    scale_rewards: str = online("group", "TRL/ms-swift: what group_norm (grpo) divides the group-centred rewards "
                                         "by: group (the group's std), batch (the whole rollout's std), none (no "
                                         "division: Dr. GRPO); true = group, false = none.",
                                choices=("group", "batch", "none", "true", "false"))
    move_model_batches: int | None = online(None, "ms-swift: in how many batches the weights are moved into vLLM. "
                                                  "rlhfx hands them over tensor by tensor (colocate) or in requests of "
                                                  "at most 256 MiB (server), which changes no result; accepted with a "
                                                  "note.")
    reward_clip_range: float | None = online(10.0, "Sequence rewards are clipped to [-c, c].")
    # the critic (gae)
    cliprange_value: float | None = online(0.2, "Value clip around the rollout's values (gae).",
                                           aliases=("value_clip",))
    vf_coef: float = online(0.1, "Weight of the value loss (gae).")
    critic_model: str | None = online(None, "Critic (gae): a model folder; a causal LM gets a new zero value head "
                                            "(default: the first --reward_model, else --model).",
                                      aliases=("critic_pretrain",))
    critic_learning_rate: float | None = online(None, "Critic learning rate (default: the policy's).")
    # reward sources
    reward_model: list[str] | None = online(None, "Reward model folders (one-label sequence classifiers such as rlhfx "
                                                  "rm runs); several are summed with --reward_weights.",
                                            aliases=("reward_pretrain",))
    reward_func: list[str] | None = online(
        None, "Rule-based rewards: built-in names (accuracy, format, cosine, repetition, soft_overlong, demo), names "
              "registered by --external_plugins, or .py files defining reward_func(queries, prompts, labels) -> "
              "list[float].", aliases=("reward_funcs",))
    external_plugins: list[str] | None = online(None, "Python files run before training; they register reward "
                                                      "functions by name: `orms['name'] = MyReward` "
                                                      "(rlhfx.rewards.builtin).")
    reward_func_timeout: float = online(300.0, "Seconds a --reward_func call may take before the run stops with an "
                                               "error.", commands=("rlhf", "sample"))
    remote_rm_url: list[str] | None = online(
        None, "HTTP reward endpoints (POST {query, prompts, labels} -> {rewards}); a key for them goes in the "
              "environment variable RLHFX_REMOTE_RM_API_KEY (sent as `Authorization: Bearer KEY`), not in the URL.")
    remote_rm_timeout: float = online(30.0, "Seconds per HTTP reward request.")
    remote_rm_retries: int = online(3, "Tries per HTTP reward request before the run stops with an error.")
    reward_weights: list[float] | None = online(None, "Weights of the reward sources in order: reward models, reward "
                                                      "functions, URLs (default: 1 each).")
    # CHORD (docs/algorithms/chord.md): an SFT loss on expert data mixed into the policy loss
    chord_sft_dataset: list[str] | None = online(
        None, "CHORD: SFT datasets of expert answers; each optimizer micro step adds mu x the NLL of a batch of them "
              "to (1 - mu) x the policy loss (default: off).")
    chord_sft_per_device_train_batch_size: int | None = online(
        None, "CHORD: expert rows per process and micro step (needed with --chord_sft_dataset).")
    chord_enable_phi_function: bool = online(False, "CHORD-phi: weigh each expert token's NLL by p (1 - p), p its "
                                                    "probability under the policy (no gradient through the weight).")
    chord_mu_warmup_steps: int | None = online(None, "CHORD: optimizer steps over which mu rises linearly from 0 to "
                                                     "--chord_mu_peak (needed with --chord_sft_dataset).")
    chord_mu_decay_steps: int | None = online(None, "CHORD: optimizer steps after the warmup over which mu falls from "
                                                    "--chord_mu_peak to --chord_mu_valley along a half cosine (needed "
                                                    "with --chord_sft_dataset).")
    chord_mu_peak: float | None = online(None, "CHORD: mu at the end of the warmup (needed with --chord_sft_dataset).")
    chord_mu_valley: float | None = online(None, "CHORD: mu after the decay, kept to the end; equal to "
                                                 "--chord_mu_peak for a constant mu (needed with --chord_sft_dataset).")

    @property
    def uses_critic(self) -> bool:
        return self.advantage_estimator == "gae"

    def joint_sft(self):
        """CHORD's expert set: every row trains, none validates (as ms-swift's)."""
        return JointSFT("chord_sft_dataset", self.chord_sft_dataset, validates=False) if self.chord_sft_dataset else None

    def validate(self, name, args):
        from rlhfx.algos.rl.config import resolve

        resolve(self, args)


def preset(name: str, default):
    """An RLOptions field with another default: a preset changes defaults only."""
    return field(default=default, metadata=RLOptions.__dataclass_fields__[name].metadata)


@dataclass
class GRPOOptions(RLOptions):
    advantage_estimator: str = preset("advantage_estimator", "group_norm")
    n_samples_per_prompt: int = preset("n_samples_per_prompt", 4)
    kl_coef: float = preset("kl_coef", 0.04)
    kl_estimator: str = preset("kl_estimator", "k3")
    use_kl_loss: bool = preset("use_kl_loss", True)


@dataclass
class RLOOOptions(RLOptions):
    advantage_estimator: str = preset("advantage_estimator", "rloo")
    n_samples_per_prompt: int = preset("n_samples_per_prompt", 4)


@dataclass
class ReinforcePPOptions(RLOptions):
    advantage_estimator: str = preset("advantage_estimator", "reinforce")


def build_options(cls: type[Options], name: str, args) -> Options:
    """The options of --rlhf_type NAME from the parsed flags (a flag not given: the field's default), validated."""
    values = {f.name: args.values[f.name] for f in fields(cls) if args.values.get(f.name) is not None}
    options = cls(**values)
    options.validate(name, args)
    return options
