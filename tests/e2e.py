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
