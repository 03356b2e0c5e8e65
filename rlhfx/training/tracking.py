"""`--report_to tensorboard|wandb|none`: check the tracker is installed before a model loads; its files stay in the run.

transformers' own callbacks do the logging: TensorBoard event files go to <output_dir>/runs/, W&B files to
<output_dir>/wandb/ (WANDB_MODE=offline works without network; `wandb sync` uploads later).
"""

import importlib.util
import os
from pathlib import Path

from rlhfx.errors import RlhfxError

# tracker -> modules any one of which makes it work (transformers' TensorBoardCallback takes tensorboardX too)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def trackers(report_to: list[str]) -> list[str]:
    """The trackers to hand the Trainer; a clear error for unknown or missing ones."""
    names = [r for r in report_to if r != "none"]
    if names and "none" in report_to:
        raise RlhfxError(f"--report_to {' '.join(report_to)} mixes none with trackers.",
                         "drop none, or pass none alone.")
    for name in names:
        if name not in TRACKERS:
            raise RlhfxError(f"--report_to {name} is not a tracker rlhfx knows.", "use tensorboard, wandb or none.")
        if not any(importlib.util.find_spec(module) for module in TRACKERS[name]):
            raise RlhfxError(f"--report_to {name} needs the {name} package, which is not installed.",
                             "pip install 'rlhfx[tracking]' (tensorboard and wandb), or drop --report_to.")
    return names


def prepare_tracking(names: list[str], output_dir) -> None:
    """Keep the trackers' files in the run folder (set before the Trainer is built: its callbacks read these).

    TensorBoard: without TENSORBOARD_LOGGING_DIR, transformers' callback sends the evaluation run before
    training to ./runs/ in the working directory. W&B: an `rlhfx` project unless WANDB_PROJECT says otherwise.
    """
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(output_dir) / "runs")
    if "wandb" in names:
        os.environ["WANDB_DIR"] = str(output_dir)
        os.environ.setdefault("WANDB_PROJECT", "rlhfx")
