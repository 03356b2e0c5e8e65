"""One training job from parsed flags: what `rlhfx sft` and `rlhfx rlhf` run after parsing, and what a loop's
training stage (rlhfx.loops.stages.train) runs with the flags it builds itself.

Before the runner (which checks the general flags, then loads the model): `validate`, which the torchrun launcher
(rlhfx.launch) also runs once before it starts any rank. Refusing a flag that belongs to another algorithm is the
command's (rlhfx.commands.rlhf): it reads the flag table, which sits above this layer, and a loop passes on only
the flags that apply (rlhfx.loops.stages.train_flags).
"""

from pathlib import Path

from rlhfx.algos import Algorithm, get_algo
from rlhfx.algos.options import Options
from rlhfx.models import check_flash_attn_device
from rlhfx.training.runner import run
from rlhfx.training.swift_flags import apply_swift_flags, print_notes


def validate(args) -> tuple[Algorithm, Options | None, list[str]]:
    """The ms-swift flags mapped, FlashAttention's GPU, the algorithm looked up and its options built and validated
    (online RL also checks its engine, reward sources and GPU-only flags there): the algorithm, its options and the
    notes to print. Nothing loads."""
    notes = apply_swift_flags(args)
    check_flash_attn_device(args)
    algo = get_algo(args.rlhf_type if args.command == "rlhf" else "sft")
    return algo, algo.build_options(args), notes


def train(args) -> Path:
    """`args`: an rlhfx.arguments.Args of command sft or rlhf; returns the run's output folder."""
    algo, options, notes = validate(args)
    print_notes(notes)
    return run(args, algo, options)
