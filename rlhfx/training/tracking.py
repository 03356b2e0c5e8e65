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


def apply_openrlhf_tracker_flags(args) -> None:
    """OpenRLHF's `--use_wandb KEY` and `--use_tensorboard DIR` add their tracker to --report_to. The key goes to
    WANDB_API_KEY and is blanked in the arguments, so args.json never holds it."""
    report_to = [name for name in args.report_to if name != "none"]
    if args.use_wandb:
        if args.use_wandb.lower() not in ("true", "1"):
            os.environ["WANDB_API_KEY"] = args.use_wandb
            args.values["use_wandb"] = "(API key given, not recorded)"
        report_to += [] if "wandb" in report_to else ["wandb"]
    if args.use_tensorboard:
        report_to += [] if "tensorboard" in report_to else ["tensorboard"]
    if args.use_wandb or args.use_tensorboard:
        args.values["report_to"] = report_to


def prepare_tracking(names: list[str], output_dir, tensorboard_dir: str | None = None) -> None:
    """Keep the trackers' files in the run folder, or TensorBoard's in `tensorboard_dir` (set before the Trainer is
    built: its callbacks read these).

    TensorBoard: without TENSORBOARD_LOGGING_DIR, transformers' callback sends the evaluation run before
    training to ./runs/ in the working directory. W&B: an `rlhfx` project unless WANDB_PROJECT says otherwise.
    """
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir or Path(output_dir) / "runs")
    if "wandb" in names:
        os.environ["WANDB_DIR"] = str(output_dir)
        os.environ.setdefault("WANDB_PROJECT", "rlhfx")


class LoopTrackers:
    """--report_to for rlhfx's own training loop (online RL), which has no transformers callbacks: every number of
    a metrics.jsonl row goes to TensorBoard (as train/KEY, or eval/KEY for eval_KEY, transformers' names) and to
    W&B, at the row's step, in the folders prepare_tracking chose."""

    def __init__(self, names: list[str]):
        self.tensorboard = self.wandb = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(os.environ["TENSORBOARD_LOGGING_DIR"])
        if "wandb" in names:
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT"), dir=os.environ.get("WANDB_DIR"))

    def log(self, row: dict) -> None:
        numbers = {(f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"): value
                   for key, value in row.items() if key not in ("step", "time") and isinstance(value, (int, float))}
        if self.tensorboard:
            for name, value in numbers.items():
                self.tensorboard.add_scalar(name, value, row["step"])
            self.tensorboard.flush()
        if self.wandb:
            self.wandb.log(numbers, step=row["step"])

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()

