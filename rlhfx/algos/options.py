"""Each algorithm's own flags, TRL-style: one dataclass per algorithm (or family), one field per flag.

A field carries its default, help and seed spellings (`option(...)`); rlhfx.arguments generates the
"algorithm" flag rows, the per-algorithm `--help` and docs/cli.md from these fields, so a flag is defined
once, and a flag several algorithms take (beta) states each one's default. `rlhfx rlhf` builds the
options from the parsed flags and calls `validate` before any model loads; the trainer gets them typed
(ctx.options). Nothing heavy is imported here: `rlhfx --help` reads these classes.
"""

from dataclasses import asdict, dataclass, field, fields

from rlhfx.errors import RlhfxError

RLHF = ("rlhf",)


def option(default, help: str, *, aliases: tuple[str, ...] = (), choices: tuple | None = None,
           group: str = "algorithm", commands: tuple[str, ...] = RLHF):
    """A dataclass field that is also a flag: `--NAME` (and `--ALIAS`) of `rlhfx rlhf`."""
    return field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices, "group": group,
                                            "commands": commands})


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


@dataclass
class Options:
    """Base of every algorithm's options."""

    def validate(self, name: str, args) -> None:
        """Checks of these options (and of general flags they depend on, in `args`); RlhfxError on bad input."""

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


def build_options(cls: type[Options], name: str, args) -> Options:
    """The options of --rlhf_type NAME from the parsed flags (a flag not given: the field's default), validated."""
    values = {f.name: args.values[f.name] for f in fields(cls) if args.values.get(f.name) is not None}
    options = cls(**values)
    options.validate(name, args)
    return options
