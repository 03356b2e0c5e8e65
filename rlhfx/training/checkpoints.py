"""Checkpoints that are either complete or absent, and `--resume_from_checkpoint PATH|latest`.

The HF Trainer writes checkpoint-N/ in place, file by file, so a run killed while saving leaves a
folder that looks like a checkpoint. rlhfx makes every trainer write into <run>/.staging/checkpoint-N
and renames it to <run>/checkpoint-N only when every file (and every rank's RNG state) is there; a
rename is atomic, so any checkpoint-N/ with a trainer_state.json is complete and `latest` can trust it.

Trainers with state of their own beyond the model, optimizer, scheduler, data position and RNG
(e.g. XRIGHT's objective sampler and its two cycling data iterators) define `checkpoint_state()`
-> dict (tensors, numbers, lists) and `load_checkpoint_state(dict)`; it lands in rlhfx_state.pt.
"""

import errno
import json
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from rlhfx.errors import RlhfxError
from rlhfx.training.guards import check_finite_weights

STAGING = ".staging"
TRAINER_STATE = "trainer_state.json"
EXTRA_STATE = "rlhfx_state.pt"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders holding a trainer_state.json, oldest step first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir()
             if (m := CHECKPOINT.match(p.name)) and p.is_dir() and (p / TRAINER_STATE).is_file()]
    return [p for _, p in sorted(found)]


def newest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / TRAINER_STATE).read_text())["global_step"]


def training_done(checkpoint: Path) -> bool:
    """Whether `checkpoint` is its run's last step (a Trainer's; the RL loop records no max_steps)."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    return state["global_step"] >= state.get("max_steps", float("inf"))


def _newest_unfinished_run(root: Path) -> Path | None:
    """Of the default output/<model_type>/v<N>-<stamp>/ folders, the highest N with a checkpoint and no summary.json."""
    runs = [(int(m.group(1)), p) for p in (root.glob("v*-*") if root.is_dir() else [])
            if (m := re.match(r"v(\d+)-", p.name)) and p.is_dir()]
    for _, run in sorted(runs, reverse=True):
        if not (run / "summary.json").exists() and complete_checkpoints(run):
            return run
    return None


def resume_target(resume: str, output_dir: str | None, default_root: Path) -> tuple[Path, Path]:
    """(run folder to write into, checkpoint to resume from) for --resume_from_checkpoint PATH|latest.

    latest: the newest complete checkpoint of --output_dir, or without --output_dir of the newest unfinished
    run under output/<model_type>/. PATH: a checkpoint-N folder, or a run folder (its newest checkpoint);
    the run continues in --output_dir when given, else in the checkpoint's own run folder.
    """
    if resume == "latest":
        run_dir = Path(output_dir) if output_dir else _newest_unfinished_run(default_root)
        where = f"--output_dir {output_dir}" if output_dir else f"{default_root}/ (no unfinished run with a checkpoint)"
        if run_dir is None or not complete_checkpoints(run_dir):
            raise RlhfxError(f"--resume_from_checkpoint latest found no complete checkpoint in {where}.",
                             "pass the --output_dir of the interrupted run, or a checkpoint-N folder as the path.")
        return run_dir, complete_checkpoints(run_dir)[-1]
    path = Path(resume)
    if path.is_dir() and not CHECKPOINT.match(path.name) and complete_checkpoints(path):
        path = complete_checkpoints(path)[-1]
    if not (path / TRAINER_STATE).is_file():
        raise RlhfxError(f"--resume_from_checkpoint {resume} is not a complete checkpoint (no {TRAINER_STATE} in it).",
                         "pass a checkpoint-N folder of an rlhfx run, its run folder, or `latest` with --output_dir.")
    return (Path(output_dir) if output_dir else path.parent), path


def stage_checkpoints(trainer) -> None:
    """Make `trainer` write each checkpoint into <output_dir>/.staging and rename it into place when complete.

    Wraps the instance's `_save_checkpoint` (every TRL trainer and transformers' Trainer go through it), so the
    algorithm modules need not know. Weights with NaN/inf are never saved. Also drops a staging folder a killed
    run left behind.
    """
    save = trainer._save_checkpoint
    run_dir = Path(trainer.args.output_dir)
    staging = run_dir / STAGING
    if trainer.is_world_process_zero() and staging.exists():
        shutil.rmtree(staging)

    def atomic_save(model, trial):
        step = trainer.state.global_step
        check_finite_weights(trainer.model, step, trainer.args.learning_rate, newest_checkpoint(run_dir))
        name = f"checkpoint-{step}"
        trainer._get_output_dir = lambda trial=None: str(staging)  # where _save_checkpoint puts checkpoint-N
        try:
            save(model, trial)
        except Exception as error:
            if not is_disk_full(error):
                raise
            shutil.rmtree(staging / name, ignore_errors=True)  # give back what the half-written one took
            raise disk_full_error(name, run_dir, newest_checkpoint(run_dir)) from None
        finally:
            del trainer._get_output_dir
        if hasattr(trainer, "checkpoint_state") and trainer.is_world_process_zero():
            import torch

            torch.save(trainer.checkpoint_state(), staging / name / EXTRA_STATE)
        trainer.accelerator.wait_for_everyone()  # every rank's rng_state_<rank>.pth is in
        if trainer.is_world_process_zero():
            publish(staging / name, run_dir / name)
            rotate(run_dir, trainer.args.save_total_limit)
            if not any(staging.iterdir()):
                staging.rmdir()  # a finished run keeps no empty .staging/
        trainer.accelerator.wait_for_everyone()

    trainer._save_checkpoint = atomic_save


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, whether raised as an OSError or wrapped by torch.save / safetensors into another exception."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def disk_full_error(what: str, run_dir: Path, kept: Path | None) -> RlhfxError:
    saved = f"the previous checkpoint, {kept}, is kept" if kept else "no earlier checkpoint was saved"
    return RlhfxError(f"No space left on the device while saving {what} in {run_dir}; {saved} and the run is not "
                      "finished (no summary.json).",
                      "free disk space (or keep fewer checkpoints with --save_total_limit), then rerun the same command "
                      "with --resume_from_checkpoint latest.")


def publish(staged: Path, final: Path) -> None:
    """Rename a finished checkpoint into place; an older one of the same step (a resumed run) is replaced."""
    if final.exists():
        old = staged.parent / f"replaced-{final.name}"
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old)
    else:
        os.replace(staged, final)


def rotate(run_dir: Path, limit: int | None) -> None:
    """Keep the `limit` newest checkpoints (by step; the Trainer's own rotation only saw the staging folder)."""
    if limit and limit > 0:
        for old in complete_checkpoints(run_dir)[:-limit]:
            shutil.rmtree(old)


class TrainingComplete(Exception):
    """Raised out of trainer.train() by StopIfTrained: the resumed checkpoint is the last step's."""


class StopIfTrained(TrainerCallback):
    """A resume from the last step's checkpoint (a run killed while writing its final outputs) has nothing left
    to train, but the Trainer checks for the end only after a step, so it would train one past max_steps. Stop
    once the checkpoint is loaded (on_train_begin, after the weights, before any step); the runner then writes
    the final outputs."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            raise TrainingComplete()


def logged_train_loss(metrics_path: Path) -> float:
    """The mean training loss of the end-of-training row of metrics.jsonl (NaN if none, or not on this machine)."""
    from rlhfx.training.plot import read_metrics

    return next((row["train_loss"] for row in reversed(read_metrics(metrics_path)) if "train_loss" in row),
                float("nan"))


def load_extra_state(trainer, checkpoint: Path) -> None:
    """Hand a trainer its own saved state (see the module docstring) before training resumes."""
    file = checkpoint / EXTRA_STATE
    if hasattr(trainer, "load_checkpoint_state"):
        if not file.is_file():
            raise RlhfxError(f"{checkpoint} has no {EXTRA_STATE}, which this algorithm needs to resume exactly.",
                             "resume from a checkpoint written by this version of rlhfx, or start the run again.")
        import torch

        trainer.load_checkpoint_state(torch.load(file, weights_only=True))


def rewind_metrics(metrics_path: Path, step: int, trained: bool = False) -> dict:
    """Drop metrics.jsonl rows logged after `step` (the killed run went on past its checkpoint) and return the
    evaluation before training (the step-0 eval row), so the resumed run's files match an uninterrupted run's.
    `trained`: the checkpoint is the last step's (the run was killed while writing its final outputs), so its
    end-of-training row stands, and only the rows after it (the evaluation after training) go."""
    from rlhfx.training.plot import read_metrics

    if not metrics_path.exists():
        return {}
    rows = read_metrics(metrics_path)
    end = next((i for i, row in enumerate(rows) if "train_runtime" in row), None)
    if trained and end is not None:
        kept = rows[:end + 1]
    else:  # rows after the checkpoint, and the end-of-training row an interrupted run logs, are not in an uninterrupted run
        kept = [row for row in rows if row["step"] <= step and "train_runtime" not in row]
    tmp = metrics_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
    tmp.replace(metrics_path)
    before = next((row for row in kept if row["step"] == 0 and any(k.startswith("eval_") for k in row)), {})
    return {k: v for k, v in before.items() if k.startswith("eval_")}
