"""`rlhfx pipeline rs|iterative_dpo|csft`: the seeds' shell loops as one resumable command (rlhfx.loops)."""

import os

from rlhfx.errors import RlhfxError

SUMMARY = "Loops that make their own data: rs (rejection sampling / RAFT), iterative_dpo (RLHFlow), csft."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help
    from rlhfx.loops import LOOPS

    name = argv[0] if argv and not argv[0].startswith("-") else None
    if "--help" in argv or "-h" in argv:
        print("Usage: rlhfx pipeline LOOP --model PI_0 --dataset PROMPTS --reward_func|--reward_model R [flags]\n")
        for spec in LOOPS.values():
            print(f"  {spec.name:<14} {spec.summary}")
        print()
        return print_help("pipeline", SUMMARY)
    if name not in LOOPS:
        raise RlhfxError(f"Unknown loop {name!r}." if name else "No loop named.",
                         f"run `rlhfx pipeline {' | '.join(LOOPS)} --model ... --dataset ...`.")
    if os.environ.get("NPROC_PER_NODE") or os.environ.get("NNODES"):
        raise RlhfxError("rlhfx pipeline runs its stages in one process; NPROC_PER_NODE/NNODES would be ignored.",
                         "unset them, or run the loop's stages yourself with `NPROC_PER_NODE=N rlhfx rlhf ...` for "
                         "the training stage (docs/loops/ lists each stage's command).")
    args = parse_args("pipeline", argv[1:])
    from rlhfx.loops.driver import run_loop

    run_loop(LOOPS[name], args)
