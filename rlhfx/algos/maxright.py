"""`--rlhf_type maxright`: MAXRIGHT: each step trains the objective farthest (weighted) from its optimum, gaps refreshed every --max_eval_steps.

The trainer is shared with the other joint SFT + DPO modes; see rlhfx/algos/xright.py.
"""

from rlhfx.algos import xright
from rlhfx.algos.xright import KIND, NEEDS_REFERENCE, SFT_DATA_FLAG

__all__ = ["KIND", "NEEDS_REFERENCE", "SFT_DATA_FLAG", "build_trainer", "write_outputs"]
MODE = "maxright"


def build_trainer(ctx):
    return xright.build_trainer(ctx, MODE)


def write_outputs(output_dir, args):
    return xright.write_outputs(output_dir, args, MODE)
