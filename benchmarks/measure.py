"""Shared by the training benchmarks: run a command measuring its wall time and peak memory, and record results."""

import json
import os
import platform
import subprocess
import time
from pathlib import Path


def run_measured(cmd: list[str], env: dict | None = None, log: str | None = None) -> dict:
    """{"wall_seconds", "peak_rss_mb"} of the child; raises with the log's tail if it fails."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as sink:
        child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = open(log).read()[-3000:] if log else ""
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail}")
    return {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def write_result(out: str, result: dict) -> None:
    """results/<name>.json with the machine named; every number here is from a CPU machine shared with others."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({
        **result, "note": "measured on a CPU machine shared with other users: re-run on a quiet machine",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
    }, indent=2) + "\n")
    print(f"written {out}")
