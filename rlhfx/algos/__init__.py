"""Algorithm registry: `--rlhf_type NAME` (and `rlhfx sft`) -> the module that builds its trainer.

Each implemented algorithm is one module exposing `KIND` (the data kind it trains on: sft,
pairwise, unpaired, prompt or process) and `build_trainer(ctx)`
(ctx: rlhfx.training.runner.RunContext). Optional: `NEEDS_REFERENCE = True` (the runner builds the
reference model), `MODEL_CLASS = "sequence_classification"` (scalar-head models such as reward
models), `SFT_DATA_FLAG = "sft_dataset"` (a second, SFT data set trained jointly),
`write_outputs(output_dir, args)` (extra files such as plots, written on the main process before summary.json),
`check_args(args)` (flag checks run by `rlhfx rlhf` before any model loads), `OWN_TRAINING_LOOP = True` (the
trainer is not a Hugging Face Trainer and writes its checkpoints itself; the runner does not wrap its saving).
Its default learning rates live in rlhfx.arguments.DEFAULT_LR, next to the flag, so `--help` states them.
"""

import difflib
import importlib
from dataclasses import dataclass

from rlhfx.errors import RlhfxError


@dataclass(frozen=True)
class AlgoEntry:
    name: str
    module: str
    summary: str


ALGOS = {e.name: e for e in [
    AlgoEntry("sft", "rlhfx.algos.sft", "supervised fine-tuning"),
    AlgoEntry("dpo", "rlhfx.algos.dpo", "DPO (sigmoid), cDPO (--label_smoothing), IPO (--loss_type ipo), RPO (--rpo_alpha)"),
    AlgoEntry("kto", "rlhfx.algos.kto", "KTO on unpaired data"),
    AlgoEntry("cpo", "rlhfx.algos.cpo", "CPO, reference-free"),
    AlgoEntry("orpo", "rlhfx.algos.orpo", "ORPO, odds-ratio preference"),
    AlgoEntry("simpo", "rlhfx.algos.simpo", "SimPO, length-normalised reference-free"),
    AlgoEntry("rm", "rlhfx.algos.rm", "Bradley-Terry reward model (scalar head, optional margin)"),
    AlgoEntry("prm", "rlhfx.algos.prm", "process reward model: per-step labels at placeholder tokens"),
    AlgoEntry("ppo", "rlhfx.algos.rl", "PPO with a critic (gae), or any --advantage_estimator of the RL trainer"),
    AlgoEntry("grpo", "rlhfx.algos.rl", "GRPO: group_norm advantages, KL as a k3 loss term (preset of ppo)"),
    AlgoEntry("rloo", "rlhfx.algos.rl", "RLOO: leave-one-out baseline (preset of ppo)"),
    AlgoEntry("reinforce_pp", "rlhfx.algos.rl", "REINFORCE++: whitened discounted returns, no critic (preset of ppo)"),
    AlgoEntry("alright", "rlhfx.algos.alright", "ALRIGHT joint SFT + DPO: a DPO step with probability --lambd, else SFT"),
    AlgoEntry("maxright", "rlhfx.algos.maxright", "MAXRIGHT joint SFT + DPO: train the objective farthest from its optimum"),
    AlgoEntry("mix", "rlhfx.algos.mix", "weighted SFT + DPO sum every step (baseline for ALRIGHT/MAXRIGHT)"),
    AlgoEntry("gkd", "rlhfx.algos.gkd", "generalised knowledge distillation: the student's own completions (--lmbda) scored by the teacher's distribution (JSD, --beta)"),
    AlgoEntry("kd", "rlhfx.algos.kd", "knowledge distillation from --teacher_model: (1 - kd_coef) NLL + kd_coef teacher cross-entropy"),
]}


def get_algo(name: str):
    """The algorithm's module; a clear error with a suggestion for unknown names."""
    entry = ALGOS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(ALGOS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(ALGOS)}."
        raise RlhfxError(f"Unknown --rlhf_type {name!r}.", hint)
    return importlib.import_module(entry.module)
