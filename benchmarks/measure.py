"""Run one command as a child process and report its wall time and its own peak resident memory (os.wait4)."""

import os
import subprocess
import time


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
