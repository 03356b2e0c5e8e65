"""How long `rlhfx --help` and `rlhfx rlhf --help` take against `trl dpo --help`, in one run.

Goal (issue: foundation): rlhfx at least 10x faster than trl, because the CLI imports nothing heavy.
Each command runs `--repeats` times after one warm-up run; the median wall time is reported.
Writes benchmarks/results/cli_startup.json.
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "rlhfx --help": ["rlhfx", "--help"],
    "rlhfx rlhf --help": ["rlhfx", "rlhf", "--help"],
    "trl dpo --help": ["trl", "dpo", "--help"],
}


def median_seconds(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    opts = parser.parse_args()
    bindir = Path(sys.executable).parent
    results = {}
    for name, cmd in COMMANDS.items():
        exe = shutil.which(cmd[0], path=str(bindir)) or shutil.which(cmd[0])
        results[name] = median_seconds([exe, *cmd[1:]], opts.repeats)
        print(f"{name:<20} {results[name]:.3f} s")
    trl = results["trl dpo --help"]
    ratios = {name: trl / seconds for name, seconds in results.items() if name.startswith("rlhfx")}
    for name, ratio in ratios.items():
        print(f"trl dpo --help / {name}: {ratio:.1f}x  (goal >= 10x: {'met' if ratio >= 10 else 'NOT met'})")
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps({
        "median_seconds": results, "speedup_vs_trl": ratios, "goal": ">= 10x", "repeats": opts.repeats,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
    }, indent=2) + "\n")
    print(f"written {opts.out}")


if __name__ == "__main__":
    main()
