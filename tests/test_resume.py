"""Kill-and-resume, atomic checkpoints, the NaN guard and --report_to, through the CLI in this process.

A run sent SIGTERM saves a checkpoint at the end of its current step and exits 143 without summary.json;
the same command with --resume_from_checkpoint latest then logs, step for step, the losses of an
uninterrupted run. On the CPU with fixed seeds the resumed run repeats the same float operations on the
same restored state, so the tolerance is LOSS_TOL (we see exact equality).
"""

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)

LOSS_TOL = 1e-6
TRAIN_KEYS = ("loss", "sft_loss", "dpo_loss", "objective")


def step_values(out: Path) -> list[tuple]:
    """(step, key, value) for every training metric row of metrics.jsonl."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], k, r[k]) for r in rows for k in TRAIN_KEYS if k in r]


def assert_same_losses(resumed: Path, uninterrupted: Path) -> float:
    a, b = step_values(resumed), step_values(uninterrupted)
    assert [(s, k) for s, k, _ in a] == [(s, k) for s, k, _ in b]
    worst = max(abs(x - y) for (_, _, x), (_, _, y) in zip(a, b))
    assert worst <= LOSS_TOL
    return worst


def sigterm_when(path: Path, done: threading.Event) -> threading.Thread:
    """Send this process SIGTERM as soon as `path` exists (the run's handler turns it into a checkpoint + stop);
    nothing if the run ends first (`done`)."""
    def watch():
        while not path.exists() and not done.is_set():
            time.sleep(0.01)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def checkpoints(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def kill_and_resume(run_cli, tmp_path, command: list[str], max_steps: int):
    """Uninterrupted run, then the same run killed after checkpoint-2 and resumed; returns both folders."""
    flags = [*command, "--max_steps", max_steps, "--save_steps", 2, "--save_total_limit", 100, "--logging_steps", 1]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*flags, "--output_dir", full)[0] == 0

    done = threading.Event()
    watcher = sigterm_when(killed / "checkpoint-2", done)
    code, out = run_cli(*flags, "--output_dir", killed)
    done.set()
    watcher.join()
    assert code == 128 + signal.SIGTERM, out
    assert "SIGTERM received" in out and "resume_from_checkpoint latest" in out
    assert not (killed / "summary.json").exists()
    saved = checkpoints(killed)
    assert 2 <= saved[-1] < max_steps  # stopped early, with a checkpoint at the step it stopped
    assert not (killed / ".staging").exists() or not any((killed / ".staging").iterdir())

    code, out = run_cli(*flags, "--output_dir", killed, "--resume_from_checkpoint", "latest")
    assert code == 0, out
    result = json.loads((killed / "summary.json").read_text())
    assert result["resumed_from"] == str(killed / f"checkpoint-{saved[-1]}")
    assert result["global_step"] == max_steps
    return full, killed, saved[-1]


def test_sft_killed_and_resumed_logs_the_uninterrupted_losses(run_cli, tmp_path):
    full, killed, _ = kill_and_resume(run_cli, tmp_path, [
        "sft", "--model", "tiny", "--dataset", "demo-sft#48", "--val_dataset", "demo-sft#8", "--train_type", "lora",
        "--batch_size", 4, "--learning_rate", "1e-3"], max_steps=16)
    assert_same_losses(killed, full)
    before_full, before_resumed = (json.loads((d / "summary.json").read_text())["before"] for d in (full, killed))
    assert before_resumed["eval_loss"] == before_full["eval_loss"]  # read back from the first segment's metrics


def test_dpo_killed_and_resumed_logs_the_uninterrupted_losses(run_cli, tmp_path):
    full, killed, _ = kill_and_resume(run_cli, tmp_path, [
        "rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#48", "--val_dataset", "demo-pref#8",
        "--train_type", "full", "--batch_size", 4, "--learning_rate", "1e-4"], max_steps=12)
    assert_same_losses(killed, full)
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert sum("train_runtime" in r for r in rows) == 1  # the killed segment's end-of-training row was rewound


def test_alright_resume_restores_its_objective_stream_and_data_position(run_cli, tmp_path):
    """ALRIGHT draws its objective from its own generator and cycles two data sets outside the Trainer: a run
    stopped after checkpoint 4 (its later checkpoints deleted) must choose and train the same steps."""
    sft_rows = tmp_path / "sft.jsonl"  # a file without a bundled validation split: no SFT evaluation to wait for
    demo = Path(__file__).parent.parent / "rlhfx" / "registry" / "demo_data" / "demo_sft_train.jsonl"
    sft_rows.write_text("".join(demo.read_text().splitlines(keepends=True)[:24]))
    flags = ["rlhf", "--rlhf_type", "alright", "--model", "tiny", "--dataset", "demo-pref#24", "--val_dataset",
             "demo-pref#8", "--sft_dataset", sft_rows, "--train_type", "lora", "--batch_size", 4, "--learning_rate",
             "1e-3", "--max_steps", 10,
             "--save_steps", 4, "--save_total_limit", 5, "--logging_steps", 1]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run_cli(*flags, "--output_dir", full)[0] == 0
    shutil.copytree(full, stopped)
    for name in ("checkpoint-8", "checkpoint-10", "summary.json"):
        shutil.rmtree(stopped / name) if (stopped / name).is_dir() else (stopped / name).unlink()
    assert run_cli(*flags, "--output_dir", stopped, "--resume_from_checkpoint", stopped / "checkpoint-4")[0] == 0
    assert_same_losses(stopped, full)
    record = [json.loads((d / "objectives.json").read_text()) for d in (full, stopped)]
    assert record[0]["objectives"] == record[1]["objectives"]
    assert len(set(record[0]["objectives"][4:])) == 2  # both objectives were drawn after the resume point
    assert record[0]["data"] == record[1]["data"]


def test_nan_guard_stops_naming_the_step_and_keeps_the_last_finite_checkpoint(run_cli, tmp_path):
    out = tmp_path / "nan"
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft#32", "--train_type", "full",
                         "--batch_size", 4, "--max_steps", 8, "--save_steps", 1, "--save_total_limit", 100,
                         "--learning_rate", "1e30", "--lr_scheduler_type", "constant", "--output_dir", out)
    assert code == 2, text
    assert "Traceback" not in text
    step = int(text.split(" at step ")[1].split(";")[0])
    assert "NaN/inf" in text
    assert step == 2  # step 1's update at lr 1e30 makes step 2's loss non-finite
    assert "learning rate is too high" in text and "fp16 overflow" in text and "bad data row" in text
    assert checkpoints(out) == list(range(1, step))  # every step before it was saved, none after
    assert f"checkpoint-{step - 1}, is kept" in text
    import torch
    from safetensors.torch import load_file

    weights = load_file(out / f"checkpoint-{step - 1}" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (out / "summary.json").exists()


def test_latest_skips_half_written_checkpoints(tmp_path):
    from rlhfx.training.checkpoints import STAGING, resume_target

    def checkpoint(path: Path, step: int, complete: bool = True):
        path.mkdir(parents=True)
        if complete:
            (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    run = tmp_path / "run"
    checkpoint(run / "checkpoint-4", 4)
    checkpoint(run / "checkpoint-10", 10)
    checkpoint(run / "checkpoint-12", 12, complete=False)  # written in place by another tool and cut short
    checkpoint(run / STAGING / "checkpoint-14", 14, complete=False)  # rlhfx's own, killed while saving
    assert resume_target("latest", str(run), tmp_path) == (run, run / "checkpoint-10")
    assert resume_target(str(run), None, tmp_path) == (run, run / "checkpoint-10")  # a run folder: its newest
    assert resume_target(str(run / "checkpoint-4"), None, tmp_path) == (run, run / "checkpoint-4")


class FakeTrainer:
    """What stage_checkpoints touches of a transformers Trainer; its save writes one file, then maybe fails."""

    def __init__(self, out: Path, fail: bool):
        from types import SimpleNamespace

        import torch

        self.args = SimpleNamespace(output_dir=str(out), save_total_limit=2, learning_rate=1e-3)
        self.state = SimpleNamespace(global_step=0)
        self.accelerator = SimpleNamespace(wait_for_everyone=lambda: None)
        self.model = torch.nn.Linear(2, 2)
        self.fail = fail

    def is_world_process_zero(self):
        return True

    def _get_output_dir(self, trial):
        return self.args.output_dir

    def _save_checkpoint(self, model, trial):
        folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("weights")
        if self.fail:
            raise KeyboardInterrupt  # killed before trainer_state.json
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": self.state.global_step}))


def test_checkpoints_appear_only_when_complete_and_rotate_by_step(tmp_path):
    from rlhfx.training.checkpoints import complete_checkpoints, stage_checkpoints

    out = tmp_path / "run"
    trainer = FakeTrainer(out, fail=False)
    stage_checkpoints(trainer)
    for step in (2, 4, 6):
        trainer.state.global_step = step
        trainer._save_checkpoint(trainer.model, None)
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-4", "checkpoint-6"]  # --save_total_limit 2
    trainer.state.global_step = 4  # a run resumed from checkpoint-4 saves step 6 again: replaced whole
    trainer._save_checkpoint(trainer.model, None)
    trainer.state.global_step = 6
    trainer._save_checkpoint(trainer.model, None)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "checkpoint-6"]  # no empty .staging/ left

    trainer.fail = True  # killed while writing checkpoint-8
    trainer.state.global_step = 8
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(trainer.model, None)
    assert not (out / "checkpoint-8").exists() and (out / ".staging" / "checkpoint-8").exists()
    stage_checkpoints(FakeTrainer(out, fail=False))  # the next run clears the leftover
    assert not (out / ".staging").exists()

    import torch

    from rlhfx.errors import RlhfxError

    with torch.no_grad():
        trainer.model.weight.fill_(float("nan"))
    trainer.fail, trainer.state.global_step = False, 10
    with pytest.raises(RlhfxError, match="NaN/inf after the update") as error:
        trainer._save_checkpoint(trainer.model, None)
    assert "checkpoint-6, is kept" in str(error.value) and not (out / "checkpoint-10").exists()


def test_a_half_written_last_metrics_row_is_dropped_on_resume(tmp_path):
    """A kill while metrics.jsonl was being appended to leaves half a row; the resume rewinds past it."""
    from rlhfx.training.checkpoints import rewind_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval_loss": 2.0}, {"step": 1, "loss": 1.5}, {"step": 2, "loss": 1.25}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 3, "lo')
    assert rewind_metrics(path, 2) == {"eval_loss": 2.0}
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


FINAL_OUTPUTS = ("summary.json", "model.safetensors", "curves.png")


def test_final_save_killed_then_resumed_trains_no_step_past_max_steps(run_cli, tmp_path):
    """Killed while writing the final outputs (checkpoint-6 of 6 is complete, model.safetensors half-written): the
    resume trains nothing more and ends with the uninterrupted run's weights and metrics. With a constant learning
    rate one extra step (the Trainer checks for the end only after a step; 6 steps end mid-epoch, 12 steps
    an epoch) would change the weights."""
    import shutil

    from safetensors.torch import load_file

    flags = ["sft", "--model", "tiny", "--dataset", "demo-sft#48", "--val_dataset", "demo-sft#8", "--train_type",
             "full", "--batch_size", 4, "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--max_steps", 6,
             "--save_steps", 2, "--logging_steps", 1]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*flags, "--output_dir", full)[0] == 0
    assert not (full / ".staging").exists()  # a finished run keeps no empty staging folder
    shutil.copytree(full, killed)
    for name in FINAL_OUTPUTS:
        (killed / name).unlink()
    (killed / "model.safetensors").write_bytes((full / "model.safetensors").read_bytes()[:1000])

    code, out = run_cli(*flags, "--output_dir", killed, "--resume_from_checkpoint", "latest")
    assert code == 0, out
    result = json.loads((killed / "summary.json").read_text())
    assert result["global_step"] == 6 and result["resumed_from"] == str(killed / "checkpoint-6")
    weights, expected = load_file(killed / "model.safetensors"), load_file(full / "model.safetensors")
    assert all(weights[k].equal(expected[k]) for k in expected)
    assert result["train_loss"] == json.loads((full / "summary.json").read_text())["train_loss"]
    # timings differ, and TRL counts num_tokens from 0 again in every process (any resume, not only this one)
    timeless = [{k: v for k, v in row.items() if not any(t in k for t in ("runtime", "per_second", "time", "num_tokens"))}
                for d in (killed, full) for row in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    assert timeless[:len(timeless) // 2] == timeless[len(timeless) // 2:]  # the same rows: no step 7, one eval after

    # killed before its first checkpoint: the rerun starts over, and its metrics.jsonl holds its own rows only
    for leftover in [*killed.glob("checkpoint-*"), *(killed / name for name in FINAL_OUTPUTS)]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    code, out = run_cli(*flags, "--output_dir", killed)
    assert code == 0 and "starting over" in out, out
    assert step_values(killed) == step_values(full)  # one row per step, not the old run's rows and then these


def test_latest_without_output_dir_picks_the_newest_unfinished_default_run(tmp_path):
    from rlhfx.training.checkpoints import resume_target

    root = tmp_path / "output" / "tiny"
    for name, finished in (("v0-20260101-000000", False), ("v1-20260102-000000", False), ("v2-20260103-000000", True)):
        (root / name / "checkpoint-2").mkdir(parents=True)
        (root / name / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
        if finished:
            (root / name / "summary.json").write_text("{}")
    (root / "v3-20260104-000000").mkdir()  # crashed before its first checkpoint
    assert resume_target("latest", None, root)[0] == root / "v1-20260102-000000"


def test_resume_and_restart_mistakes_are_clear_errors(run_cli, tmp_path):
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft",
                         "--resume_from_checkpoint", tmp_path / "nope")
    assert code == 2 and "is not a complete checkpoint" in text
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft", "--output_dir", tmp_path,
                         "--resume_from_checkpoint", "latest")
    assert code == 2 and "found no complete checkpoint" in text
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft#8", "--output_dir", tmp_path)
    assert code == 2 and "holds checkpoints of an unfinished run" in text


@pytest.mark.parametrize("tracker, module", [("wandb", "wandb"), ("tensorboard", "tensorboard")])
def test_missing_tracker_names_the_extra(run_cli, tmp_path, tracker, module, monkeypatch):
    import importlib.util

    from rlhfx.training.tracking import TRACKERS

    real_find_spec = importlib.util.find_spec  # the tracker reads as missing, whether or not it is installed here
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name in TRACKERS[tracker] else real_find_spec(name, *rest))
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft", "--report_to", tracker)
    assert code == 2 and "rlhfx[tracking]" in text


def test_tensorboard_event_file_holds_every_logged_loss(run_cli, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft#16", "--train_type", "lora",
                         "--batch_size", 4, "--max_steps", 4, "--logging_steps", 1, "--report_to", "tensorboard",
                         "--output_dir", out)
    assert code == 0, text
    assert not (tmp_path / "runs").exists()  # transformers' default for the evaluation before training: the working dir
    scalars = EventAccumulator(str(out / "runs")).Reload().Scalars("train/loss")
    logged = [(s, k, v) for s, k, v in step_values(out) if k == "loss"]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in scalars] == [(s, v) for s, _, v in logged]


ALGORITHMS = {  # every runner-driven algorithm (alright: above): its data flags
    "sft": ["sft", "--dataset", "demo-sft#24", "--val_dataset", "demo-sft#8"],
    "dpo": ["rlhf", "--rlhf_type", "dpo", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8"],
    "kto": ["rlhf", "--rlhf_type", "kto", "--dataset", "demo-kto#24", "--val_dataset", "demo-kto#8"],
    "cpo": ["rlhf", "--rlhf_type", "cpo", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8"],
    "simpo": ["rlhf", "--rlhf_type", "simpo", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8"],
    "orpo": ["rlhf", "--rlhf_type", "orpo", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8"],
    "rm": ["rlhf", "--rlhf_type", "rm", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8"],
    "prm": ["rlhf", "--rlhf_type", "prm", "--dataset", "demo-prm#24", "--val_dataset", "demo-prm#8"],
    "maxright": ["rlhf", "--rlhf_type", "maxright", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8",
                 "--sft_dataset", "demo-sft#24", "--max_eval_steps", "3"],
    "mix": ["rlhf", "--rlhf_type", "mix", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#8",
            "--sft_dataset", "demo-sft#24"],
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_resumes_exactly(run_cli, tmp_path, algo):
    """A run stopped after checkpoint 4 of 8 (later checkpoints deleted) and resumed logs the same losses."""
    flags = [*ALGORITHMS[algo], "--model", "tiny", "--train_type", "lora", "--batch_size", 4,
             "--learning_rate", "1e-3", "--max_steps", 8, "--save_steps", 4, "--logging_steps", 1]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run_cli(*flags, "--output_dir", full)[0] == 0
    shutil.copytree(full, stopped)
    shutil.rmtree(stopped / "checkpoint-8")
    (stopped / "summary.json").unlink()
    assert run_cli(*flags, "--output_dir", stopped, "--resume_from_checkpoint", "latest")[0] == 0
    print(f"{algo}: largest loss difference {assert_same_losses(stopped, full):.3g}")


def test_all_finite_tells_nan_and_inf_from_large_finite_values():
    import torch

    from rlhfx.training.guards import all_finite

    grads = [torch.randn(64, 64) for _ in range(4)]
    assert all_finite(grads)
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = [g.clone() for g in grads]
        broken[2][3, 3] = bad
        assert not all_finite(broken)
    huge = [g.clone() for g in grads]
    huge[0].fill_(3e38)  # its norm overflows to inf, yet every value is finite
    assert all_finite(huge)


@pytest.mark.parametrize("argv, report_to, recorded_key", [
    (["--use_wandb", "secret-key"], ["wandb"], "(API key given, not recorded)"),
    (["--use_wandb", "True", "--report_to", "tensorboard"], ["tensorboard", "wandb"], "True"),
    (["--use_tensorboard", "tb_logs"], ["tensorboard"], None),
])
def test_openrlhf_tracker_flags_add_their_tracker_and_keep_the_key_out_of_the_args(monkeypatch, argv, report_to,
                                                                                  recorded_key):
    from rlhfx.arguments import parse_args
    from rlhfx.training.tracking import apply_openrlhf_tracker_flags

    monkeypatch.setenv("WANDB_API_KEY", "before")  # restored after the test
    args = parse_args("sft", ["--model", "tiny", *argv])
    apply_openrlhf_tracker_flags(args)
    assert args.report_to == report_to and args.use_wandb == recorded_key
    assert os.environ["WANDB_API_KEY"] == ("secret-key" if "secret-key" in argv else "before")
    assert "secret-key" not in json.dumps(args.to_dict())


def test_use_tensorboard_writes_the_event_files_to_its_folder(run_cli, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs = tmp_path / "run", tmp_path / "tb_logs"
    code, text = run_cli("sft", "--model", "tiny", "--dataset", "demo-sft#16", "--train_type", "lora", "--batch_size",
                         4, "--max_steps", 2, "--logging_steps", 1, "--use_tensorboard", logs, "--output_dir", out)
    assert code == 0, text
    assert len(EventAccumulator(str(logs)).Reload().Scalars("train/loss")) == 2 and not (out / "runs").exists()
    assert json.loads((out / "args.json").read_text())["report_to"] == ["tensorboard"]


def test_loop_trackers_send_each_metrics_row_to_wandb_under_transformers_names(monkeypatch, tmp_path):
    """Online RL's own loop: a stand-in wandb module records what rlhfx hands it (wandb itself is not installed here)."""
    import sys
    from types import SimpleNamespace

    from rlhfx.training.tracking import LoopTrackers

    calls = []
    run = SimpleNamespace(log=lambda numbers, step: calls.append((step, numbers)), finish=lambda: calls.append("done"))
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(init=lambda **kwargs: calls.append(kwargs) or run))
    monkeypatch.setenv("WANDB_PROJECT", "p")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    loop = LoopTrackers(["wandb"])
    loop.log({"step": 3, "epoch": 0.5, "time": 1.0, "reward": 0.25, "eval_reward": 0.5, "note": "text"})
    loop.close()
    assert calls == [{"project": "p", "dir": str(tmp_path)},
                     (3, {"train/epoch": 0.5, "train/reward": 0.25, "eval/reward": 0.5}), "done"]
