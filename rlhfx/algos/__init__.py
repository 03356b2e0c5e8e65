"""Algorithm registry: one `Algorithm` record per `--rlhf_type NAME` (and `rlhfx sft`).

The registry, `rlhfx --help`, --rlhf_type's help, the flag table (rlhfx.arguments, generated from each
record's `options` class), docs/cli.md and the tests all read these records. The runner receives the record
from rlhfx.algos.job and reads its fields; `module` is imported only to build the trainer (`build_trainer(ctx)`,
ctx: rlhfx.training.runner.RunContext, with ctx.options the validated options). Nothing heavy is imported
here: `rlhfx --help` reads this file.

A new pairwise loss is a function in algos/losses.py, an options class in algos/options.py (or an existing
one) and a record here with `loss=` naming the function: rlhfx.algos.pairwise trains it.
"""

import difflib
import importlib
from dataclasses import dataclass, field

from rlhfx.algos import options as opts
from rlhfx.errors import RlhfxError


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    kind: str  # the data kind it trains on: sft, pairwise, unpaired, prompt or process
    module: str  # builds the trainer: build_trainer(ctx)
    lr_lora: float  # peak learning rate without --learning_rate, by --train_type
    lr_full: float
    options: type[opts.Options] | None = None  # its flags; None: no own flags (sft, rm)
    needs_reference: bool = False  # the runner builds the frozen reference model
    model_class: str = "causal_lm"  # or sequence_classification (scalar-head models such as reward models)
    loss: str | None = None  # pairwise: the loss function in algos/losses.py that rlhfx.algos.pairwise trains
    own_training_loop: bool = False  # not a Hugging Face Trainer: writes its checkpoints itself
    writes_outputs: bool = False  # module.write_outputs(output_dir, options, name): extra files such as plots
    checks_args: bool = False  # module.check_args(args, options) before any model loads (online RL: the
    # engine and reward sources the flags name)
    lora_on_head: bool = False  # its loss runs the output head's forward, so a LoRA adapter there trains (TRL's
    # SFT/DPO/KTO trainers compute log-probabilities from the head's weight: --lora_target_modules lm_head is refused)
    flag_defaults: dict = field(default_factory=dict)  # general flags' defaults for this algorithm (KTO's batch)

    def default_lr(self, train_type: str) -> float:
        return self.lr_full if train_type == "full" else self.lr_lora

    def build_options(self, args) -> opts.Options | None:
        """Its flags given for --rlhf_type NAME as a validated options object; runs before any model loads."""
        for name, value in self.flag_defaults.items():
            if name not in args.explicit:
                args.values[name] = value
        options = None if self.options is None else opts.build_options(self.options, self.name, args)
        if self.checks_args:
            self.trainer_module().check_args(args, options)
        return options

    def trainer_module(self):
        return importlib.import_module(self.module)

    def build_trainer(self, ctx):
        return self.trainer_module().build_trainer(ctx)


PAIRWISE = "rlhfx.algos.pairwise"
XRIGHT = "rlhfx.algos.xright"
RL_MODULE = "rlhfx.algos.rl"
RL = dict(kind="prompt", module=RL_MODULE, lr_lora=2e-5, lr_full=1e-6, needs_reference=True, own_training_loop=True,
          checks_args=True, lora_on_head=True)

ALGOS = {a.name: a for a in [
    Algorithm("sft", "supervised fine-tuning", "sft", "rlhfx.algos.sft", 2e-4, 1e-4),
    Algorithm("dpo", "DPO (sigmoid), cDPO (--label_smoothing), IPO (--loss_type ipo), RPO (--rpo_alpha)", "pairwise",
              PAIRWISE, 5e-5, 5e-6, opts.DPOOptions, needs_reference=True, loss="dpo_loss"),
    Algorithm("kto", "KTO on unpaired data", "unpaired", "rlhfx.algos.kto", 5e-5, 1e-6, opts.KTOOptions,
              needs_reference=True, flag_defaults={"batch_size": 2}),  # the fewest rows that give z0 a mismatched pair
    Algorithm("cpo", "CPO, reference-free", "pairwise", PAIRWISE, 5e-5, 5e-6, opts.CPOOptions, loss="cpo_loss"),
    Algorithm("orpo", "ORPO, odds-ratio preference", "pairwise", PAIRWISE, 5e-5, 5e-6, opts.ORPOOptions,
              loss="orpo_loss"),
    Algorithm("simpo", "SimPO, length-normalised reference-free", "pairwise", PAIRWISE, 5e-5, 1e-6, opts.SimPOOptions,
              loss="simpo_loss"),
    Algorithm("nca", "NCA (noise contrastive alignment): each answer's reward against the reference on its own",
              "pairwise", PAIRWISE, 5e-5, 5e-6, opts.BetaOptions, needs_reference=True, loss="nca_loss"),
    Algorithm("rm", "Bradley-Terry reward model (scalar head, optional margin)", "pairwise", "rlhfx.algos.rm", 1e-4,
              1e-5, model_class="sequence_classification"),
    Algorithm("prm", "process reward model: per-step labels at placeholder tokens", "process", "rlhfx.algos.prm", 1e-4,
              1e-5, opts.PRMOptions),
    Algorithm("ppo", "PPO with a critic (gae), or any --advantage_estimator of the RL trainer", options=opts.RLOptions,
              **RL),
    Algorithm("grpo", "GRPO: group_norm advantages, KL as a k3 loss term (preset of ppo)", options=opts.GRPOOptions,
              **RL),
    Algorithm("rloo", "RLOO: leave-one-out baseline (preset of ppo)", options=opts.RLOOOptions, **RL),
    Algorithm("reinforce_pp", "REINFORCE++: whitened discounted returns, no critic (preset of ppo)",
              options=opts.ReinforcePPOptions, **RL),
    Algorithm("alright", "ALRIGHT joint SFT + DPO: a DPO step with probability --lambd, else SFT", "pairwise", XRIGHT,
              5e-5, 5e-6, opts.XrightOptions, needs_reference=True, writes_outputs=True),
    Algorithm("maxright", "MAXRIGHT joint SFT + DPO: train the objective farthest from its optimum", "pairwise",
              XRIGHT, 5e-5, 5e-6, opts.MaxrightOptions, needs_reference=True, writes_outputs=True),
    Algorithm("mix", "weighted SFT + DPO sum every step (baseline for ALRIGHT/MAXRIGHT)", "pairwise", XRIGHT, 5e-5,
              5e-6, opts.XrightOptions, needs_reference=True, writes_outputs=True),
    Algorithm("kd", "knowledge distillation from --teacher_model: (1 - kd_coef) NLL + kd_coef teacher cross-entropy",
              "sft", "rlhfx.algos.kd", 2e-4, 1e-4, opts.KDOptions),
    Algorithm("gkd", "generalised knowledge distillation: the student's own completions (--lmbda) scored by the "
              "teacher's distribution (JSD, --beta)", "sft", "rlhfx.algos.gkd", 1e-4, 1e-5, opts.GKDOptions),
]}


def get_algo(name: str) -> Algorithm:
    """The algorithm's record; a clear error with a suggestion for unknown names."""
    algorithm = ALGOS.get(name)
    if algorithm is None:
        close = difflib.get_close_matches(name, list(ALGOS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(ALGOS)}."
        raise RlhfxError(f"Unknown --rlhf_type {name!r}.", hint)
    return algorithm
