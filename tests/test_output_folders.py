"""A run never writes over a model folder or a folder of the user's, and two runs never share an output folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)

from rlhfx.training.lock import LOCK_FILE, RunLock

DPO = ["rlhf", "--rlhf_type", "dpo", "--dataset", "demo-pref#8", "--max_steps", "1", "--save_steps", "1"]


@pytest.fixture
def model_copy(tmp_path) -> Path:
    from rlhfx.registry.tiny import tiny_model_path

    folder = tmp_path / "base"
    shutil.copytree(tiny_model_path(), folder)
    (folder / "README.md").write_text("my model card\n")
    return folder


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_output_dir_on_the_model_folder_is_refused(run_cli, model_copy, where):
    before = snapshot(model_copy)
    out = {"same": model_copy, "inside": model_copy / "ft", "holds": model_copy.parent}[where]
    code, text = run_cli(*DPO, "--model", model_copy, "--output_dir", out)
    assert code == 2, text
    assert "would overwrite the model's weights" in text and "--overwrite_output_dir" in text
    assert {"same": " is the model folder", "inside": "lies inside the model folder", "holds": "holds the model folder"}[where] in text
    assert snapshot(model_copy) == before and not (model_copy / "ft").exists()


def test_a_folder_of_the_users_is_refused_then_written_with_overwrite_output_dir(run_cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "results.csv").write_text("a,b\n")
    code, text = run_cli(*DPO, "--model", "tiny", "--output_dir", out)
    assert code == 2 and "already holds files that are not an rlhfx run (README.md, results.csv)" in text, text
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "results.csv"]

    code, text = run_cli(*DPO, "--model", "tiny", "--output_dir", out, "--overwrite_output_dir")
    assert code == 0, text
    assert (out / "summary.json").is_file() and (out / "results.csv").read_text() == "a,b\n"
    assert not (out / LOCK_FILE).exists()  # released at the end of the run


def test_an_unfinished_rlhfx_run_folder_is_not_mistaken_for_a_users_folder(run_cli, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    code, text = run_cli(*DPO, "--model", "tiny", "--output_dir", out)
    assert code == 2 and "holds checkpoints of an unfinished run" in text, text


HOLD = """
import sys, time
from rlhfx.training.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def hold(folder: Path) -> subprocess.Popen:
    """A process holding the folder's lock, as a running rlhfx run does."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(run_cli, tmp_path):
    out = tmp_path / "out"
    holder = hold(out)
    try:
        code, text = run_cli(*DPO, "--model", "tiny", "--output_dir", out)
        assert code == 2, text
        assert f"is in use by another rlhfx run (pid {holder.pid})" in text and f"kill {holder.pid}" in text
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, how):
    out = tmp_path / "out"
    holder = hold(out)
    with pytest.raises(Exception, match=f"pid {holder.pid}"):
        RunLock(out).__enter__()
    holder.send_signal(how)
    holder.wait()
    assert (out / LOCK_FILE).read_text().split()[0] == str(holder.pid)  # a stale file stays behind a SIGKILL
    with RunLock(out):
        assert (out / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (out / LOCK_FILE).exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ZeroDivisionError):
        with RunLock(out):
            (out / "args.json").write_text("{}")
            1 / 0
    with RunLock(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["args.json"]


def test_ctrl_c_removes_the_lock_file(tmp_path):
    out = tmp_path / "out"
    holder = hold(out)
    holder.send_signal(signal.SIGINT)
    holder.wait()
    assert not out.exists()  # the lock file went, and the folder it had created empty with it


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_previous_one(run_cli, tmp_path, monkeypatch):
    import errno

    import torch

    save = torch.save

    def full_disk_at_step_2(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_step_2)
    out = tmp_path / "out"
    code, text = run_cli("rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#8", "--max_steps", "3",
                         "--save_steps", "1", "--output_dir", out)
    assert code == 2 and "Traceback" not in text, text
    assert "No space left on the device while saving checkpoint-2" in text and "checkpoint-1, is kept" in text
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-2").exists() and not (out / ".staging" / "checkpoint-2").exists()
    assert not (out / "summary.json").exists()


def test_a_full_disk_during_an_online_rl_checkpoint_keeps_the_previous_one(tmp_path):
    """rlhfx's own RL loop saves its checkpoints itself: the same message, the staged half removed."""
    import errno
    from types import SimpleNamespace

    from rlhfx.errors import RlhfxError
    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.loop import OnlineRLTrainer

    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1}')

    def full_disk(folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer = SimpleNamespace(output_dir=tmp_path, step=2, ranks=Ranks(), _write_checkpoint=full_disk)
    with pytest.raises(RlhfxError, match="No space left on the device while saving checkpoint-2") as error:
        OnlineRLTrainer.save_checkpoint(trainer)
    assert "checkpoint-1, is kept" in str(error.value)
    assert not (tmp_path / "checkpoint-2").exists() and not (tmp_path / ".staging" / "checkpoint-2").exists()
