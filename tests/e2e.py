"""Helpers for end-to-end tests that drive the real `rlhfx` CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

RLHFX = [sys.executable, "-m", "rlhfx"]


def rlhfx(*argv, env=None, expect_rc=0):
    """Run `rlhfx ARGV`; assert the exit code and return the CompletedProcess."""
    result = subprocess.run([*RLHFX, *map(str, argv)], capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == expect_rc, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def summary(out: Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


RESUMED_KEYS = ["reward", "kl", "kl_coef", "policy_loss", "entropy", "kl_loss", "value_loss", "response_length"]


def stop_resume_and_compare(flags: list, whole: Path, killed: Path, env: dict | None = None, sigkill: bool = False) -> None:
    """An online RL run of 4 steps saving every 2 (FLAGS), once whole in WHOLE and once in KILLED stopped by SIGTERM
    (it saves after the step) or SIGKILL (it dies mid-step; checkpoint-2 is what is left) once checkpoint-2 exists,
    then resumed with --resume_from_checkpoint latest: steps 3 and 4 must log what the uninterrupted run logs."""
    import signal
    import time

    signum = signal.SIGKILL if sigkill else signal.SIGTERM

    rlhfx(*flags, "--output_dir", whole, env=env)
    process = subprocess.Popen([*RLHFX, *map(str, flags), "--output_dir", str(killed)], env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (killed / "checkpoint-2").exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signum)
    stderr = process.communicate()[1]
    assert process.returncode == (-signum if sigkill else 128 + signum), stderr[-3000:]
    assert not (killed / "summary.json").exists(), "the run finished before it could be stopped"
    rlhfx(*flags, "--output_dir", killed, "--resume_from_checkpoint", "latest", env=env)
    expected = {m["step"]: m for m in metrics(whole) if "reward" in m}
    resumed = {m["step"]: m for m in metrics(killed) if "reward" in m}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in (key for key in RESUMED_KEYS if key in expected[step]):  # kl_loss: grpo; value_loss: ppo
            assert abs(resumed[step][key] - expected[step][key]) <= 1e-5, (step, key, resumed[step][key],
                                                                           expected[step][key])
    assert summary(killed)["global_step"] == 4

