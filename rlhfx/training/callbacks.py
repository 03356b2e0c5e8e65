"""Trainer callbacks: metrics.jsonl (one JSON object per log event), a rich progress bar (or plain lines when
stdout is not a terminal), the held-out metrics before training."""

import json
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

PROGRESS_KEYS = ("loss", "rewards/accuracies", "rewards/margins")
PLAIN_KEYS = (*PROGRESS_KEYS, "grad_norm", "learning_rate", "reward", "kl", "eval_loss", "eval_rewards/accuracies",
              "eval_reward")
REDRAW_SECONDS = 0.5


def plain_line(step: int, max_steps: int, epoch: float | None, logs: dict, seconds: float) -> str:
    """One log event as a line for a log file: `step 10/100  epoch 0.50  loss 1.234  ...  42s`."""
    values = "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in PLAIN_KEYS and isinstance(v, (int, float)))
    return f"step {step}/{max_steps}  epoch {epoch or 0:.2f}  {values}  {seconds:.0f}s"


class MetricsWriter(TrainerCallback):
    """Appends every log event, with its step, epoch and wall-clock time, to metrics.jsonl on the main process."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}) + "\n")


class FirstEvaluation(TrainerCallback):
    """Keeps the metrics of the evaluation at step 0 (TrainingArguments.eval_on_start), the "before" of
    summary.json, and its wall and CPU seconds, which the run's train time leaves out."""

    def __init__(self):
        self.metrics = {}
        self.seconds = self.cpu_seconds = 0.0
        self._clocks = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._clocks = (time.time(), time.process_time())  # eval_on_start runs right after this

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == 0 and not self.metrics and self._clocks:
            self.metrics = dict(metrics or {})
            self.seconds, self.cpu_seconds = time.time() - self._clocks[0], time.process_time() - self._clocks[1]


class RichProgress(TrainerCallback):
    """One progress bar over optimizer steps showing the latest loss (and reward accuracy/margin). When stdout is
    a file or pipe (a cluster job's log), a bar would print nothing until the end: one plain line per log event
    instead, flushed at once."""

    def __init__(self):
        self.progress = None
        self.task = None
        self.drawn = 0.0
        self.started = 0.0
        self.plain = False

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.started = time.monotonic()
        self.plain = not sys.stdout.isatty()
        if self.plain:
            return
        # redrawn at step ends, at most every REDRAW_SECONDS (as tqdm does): rich's own refresh thread would take
        # the GIL from the training loop 10 times a second
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), auto_refresh=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, info="")
        self.drawn = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.update(self.task, completed=state.global_step)
            if time.monotonic() - self.drawn >= REDRAW_SECONDS:
                self.progress.refresh()
                self.drawn = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.plain and state.is_world_process_zero and any(k in PLAIN_KEYS for k in logs or {}):
            print(plain_line(state.global_step, state.max_steps, state.epoch, logs, time.monotonic() - self.started),
                  flush=True)
        if self.progress and logs:
            info = "  ".join(f"{k.split('/')[-1]} {logs[k]:.4g}" for k in PROGRESS_KEYS if k in logs)
            self.progress.update(self.task, info=info)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.update(self.task, completed=state.global_step)
        self.stop()

    def stop(self):
        """Also called when training ends with an exception, so the terminal is left clean."""
        if self.progress:
            self.progress.stop()
            self.progress = None
