"""One training job from parsed flags: what `rlhfx sft` and `rlhfx rlhf` run after parsing, and what a loop's
training stage (rlhfx.loops.stages.train) runs with the flags it builds itself.

Before the runner (which checks the general flags, then loads the model): the ms-swift flags mapped, the algorithm
looked up and its options built and validated. Refusing a flag that belongs to another algorithm is the command's
(rlhfx.commands.rlhf): it reads the flag table, which sits above this layer, and a loop passes on only the flags
that apply (rlhfx.loops.stages.train_flags).
"""

from pathlib import Path

from rlhfx.algos import get_algo
from rlhfx.training.runner import run
from rlhfx.training.swift_flags import apply_swift_flags, print_notes


def train(args) -> Path:
    """`args`: an rlhfx.arguments.Args of command sft or rlhf; returns the run's output folder."""
    notes = apply_swift_flags(args)
    algo = get_algo(args.rlhf_type if args.command == "rlhf" else "sft")
    print_notes(notes)
    options = algo.build_options(args)  # validated before any model loads
    return run(args, algo, options)
