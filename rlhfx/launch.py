"""Relaunch a training command under torchrun when NPROC_PER_NODE or NNODES is set (ms-swift style).

When a rank fails, its rlhfx error is printed once, by the launching process: each rank writes its error into a
folder the launcher names (RANK_ERRORS_ENV) instead of printing it, and torchrun runs inside `python -m
rlhfx.launch`, which ends without torchrun's ChildFailedError traceback.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ENV_TO_TORCHRUN = {"NNODES": "--nnodes", "NODE_RANK": "--node_rank", "MASTER_ADDR": "--master_addr",
                   "MASTER_PORT": "--master_port"}
RANK_ERRORS_ENV = "RLHFX_RANK_ERRORS"
FAILED_RANK = "failed_rank.json"  # written by `python -m rlhfx.launch`: torchrun's first failed rank


def is_torchrun_child() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_command(command: str, argv: list[str], env: dict) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", env.get("NPROC_PER_NODE", "1")]
    for var, option in ENV_TO_TORCHRUN.items():
        if env.get(var):
            cmd += [option, env[var]]
    if not env.get("NNODES") or env.get("NNODES") == "1":
        cmd += ["--standalone"] if not env.get("MASTER_PORT") else []
    return cmd + ["-m", "rlhfx", command, *argv]


def check_gpus_per_node(processes: int) -> None:
    """With GPUs visible every process needs one of its own: NCCL aborts two ranks on one GPU only after loading."""
    import torch

    from rlhfx.errors import RlhfxError

    gpus = torch.cuda.device_count()
    if 0 < gpus < processes:
        raise RlhfxError(f"NPROC_PER_NODE={processes} but {gpus} GPU{'s' if gpus > 1 else ''} visible: each process "
                         "needs a GPU of its own.",
                         f"set NPROC_PER_NODE={gpus} (or fewer), or CUDA_VISIBLE_DEVICES= to run the processes on the CPU.")


def check_spreadable(command: str, argv: list[str]) -> None:
    """Refuse before torchrun starts ranks that would each stop at the same error (a GPU-only flag on the CPU, a bad
    option): the command's own flag checks, once, with nothing started."""
    import importlib

    from rlhfx.algos.job import validate

    validate(importlib.import_module(f"rlhfx.commands.{command}").parse(argv))


def relaunch_under_torchrun(command: str, argv: list[str]) -> None:
    """Run torchrun with the same arguments and exit with its code; return if no relaunch is wanted.
    A failed rank's RlhfxError is raised here, once for all ranks."""
    if is_torchrun_child() or not (os.environ.get("NPROC_PER_NODE") or os.environ.get("NNODES")):
        return
    check_spreadable(command, argv)
    check_gpus_per_node(int(os.environ.get("NPROC_PER_NODE", "1")))
    cmd = torchrun_command(command, argv, dict(os.environ))
    from rlhfx.redact import redact_argv

    print("rlhfx: launching", " ".join(redact_argv(cmd)), flush=True)
    errors = Path(tempfile.mkdtemp(prefix="rlhfx-ranks-"))
    try:
        child = subprocess.Popen([sys.executable, "-m", "rlhfx.launch", *cmd[3:]],
                                 env={**os.environ, RANK_ERRORS_ENV: str(errors)})
        # Ctrl-C reaches torchrun and its workers from the terminal; a SIGTERM sent to this process is passed on, so
        # the workers save a checkpoint (rlhfx/training/guards.py) instead of being orphaned or killed mid-save
        forwarded = []
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, frame: (forwarded.append(signum), child.send_signal(signum)))
        code = child.wait()
        error = rank_error(errors)
    finally:
        shutil.rmtree(errors, ignore_errors=True)
    if error:
        raise error
    sys.exit(128 + forwarded[0] if forwarded else code if code >= 0 else 128 - code)  # as a shell reports a signal


def hand_error_to_launcher(error) -> bool:
    """In a rank started by relaunch_under_torchrun: leave `error` for the launcher to print once (True)."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if not (folder and is_torchrun_child() and Path(folder).is_dir()):
        return False
    record = {"what": error.what, "fix": error.fix, "exit_code": getattr(error, "exit_code", 2)}
    (Path(folder) / f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))
    return True


def rank_error(folder: Path):
    """The RlhfxError to print for a failed run: the first failed rank's own error, else any rank's, else (a rank
    that crashed or was killed, its traceback above) one naming the rank and how it ended. None if no rank failed."""
    from rlhfx.errors import RlhfxError

    failed = json.loads((folder / FAILED_RANK).read_text()) if (folder / FAILED_RANK).is_file() else None
    files = sorted(folder.glob("rank-*.json"), key=lambda f: int(f.stem.removeprefix("rank-")))
    first = folder / f"rank-{failed['rank']}.json" if failed else None
    chosen = first if first and first.is_file() else (files[0] if files else None)
    if chosen:
        record = json.loads(chosen.read_text())
        error = RlhfxError(record["what"], record["fix"])
        error.exit_code = record["exit_code"]
        return error
    if failed is None:
        return None
    code = failed["exitcode"]
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    error = RlhfxError(f"Rank {failed['rank']} {how}; training stopped on every rank.",
                       "read that rank's output above; a SIGKILL is often the out-of-memory killer (try a smaller "
                       "--batch_size or --max_length).")
    error.exit_code = 128 - code if code < 0 else code
    return error


def run_torchrun(torchrun_args: list[str]) -> None:
    """torchrun's own main, ending with its first failed rank's exit code instead of a ChildFailedError traceback
    (that rank's error is printed by the launcher). Its one-line failure log goes too, for the same reason."""
    import logging

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    logging.getLogger("torch.distributed.elastic.agent.server.api").addFilter(lambda r: r.levelno < logging.ERROR)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(lambda r: r.levelno < logging.ERROR)
    try:
        main(torchrun_args)
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        folder = os.environ.get(RANK_ERRORS_ENV)
        if folder:
            (Path(folder) / FAILED_RANK).write_text(json.dumps({"rank": rank, "exitcode": first.exitcode}))
        sys.exit(first.exitcode if first.exitcode > 0 else 128 - first.exitcode)
    except SignalException as stopped:  # torchrun passed the signal to the workers, which saved and stopped
        sys.exit(128 + stopped.sigval)


if __name__ == "__main__":
    run_torchrun(sys.argv[1:])
