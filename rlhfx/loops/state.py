"""state.json: where a loop is (iteration, stage, the current iteration's paths), rewritten atomically after
every stage, so a killed run re-run with the same command goes on at the stage it was in.

The flags the loop was started with are kept too: re-running into the same folder with other flags would mix
two experiments, so it is refused (only --training_iters may change, to extend a finished loop).
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.redact import redact
from rlhfx.training.outputs import write_json_atomic

STATE_FILE = "state.json"
EXTENDABLE = {"training_iters"}


@dataclass
class LoopState:
    loop: str
    flags: dict
    iteration: int = 0
    stage: str = "generate"  # generate | score | train (of `iteration`), then evaluate | report | done
    paths: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # "iter_0/generate" -> wall seconds of each finished stage

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / STATE_FILE, asdict(self))


def loop_flags(args) -> dict:
    """The flags that define the experiment: everything set explicitly except those that may change on a re-run."""
    return redact(json.loads(json.dumps({name: args.values[name] for name in sorted(args.explicit - EXTENDABLE)})))


def load_or_start(folder: Path, loop: str, args) -> tuple[LoopState, bool]:
    """The saved state of this loop (and True), or a fresh one (and False)."""
    file = folder / STATE_FILE
    flags = loop_flags(args)
    if not file.is_file():
        return LoopState(loop=loop, flags=flags), False
    state = LoopState(**json.loads(file.read_text()))
    if state.loop != loop:
        raise RlhfxError(f"{folder} holds a `rlhfx pipeline {state.loop}` run, not {loop}.",
                         "pass another --output_dir, or the same loop name to resume it.")
    changed = sorted(k for k in set(flags) | set(state.flags) if flags.get(k) != state.flags.get(k))
    if changed:
        raise RlhfxError(f"{folder} holds a loop started with other flags ({', '.join('--' + k for k in changed)} "
                         "differ); resuming it with these would mix two experiments.",
                         "re-run the same command to resume (only --training_iters may change), or pass another "
                         "--output_dir.")
    return state, True
