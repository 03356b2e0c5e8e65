"""Relaunch a training command under torchrun when NPROC_PER_NODE or NNODES is set (ms-swift style)."""

import os
import signal
import subprocess
import sys

ENV_TO_TORCHRUN = {"NNODES": "--nnodes", "NODE_RANK": "--node_rank", "MASTER_ADDR": "--master_addr",
                   "MASTER_PORT": "--master_port"}


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
    """Online RL trains in one process: refuse it before torchrun starts ranks that would each load and fail."""
    from rlhfx.arguments import RL, parse_args
    from rlhfx.errors import RlhfxError

    rlhf_type = parse_args(command, argv).rlhf_type if command == "rlhf" else None
    if rlhf_type in RL:
        raise RlhfxError(f"--rlhf_type {rlhf_type} (online RL) trains in one process in this version; "
                         "NPROC_PER_NODE/NNODES cannot spread it.", "unset NPROC_PER_NODE and NNODES.")


def relaunch_under_torchrun(command: str, argv: list[str]) -> None:
    """Exec torchrun with the same arguments and exit with its code; return if no relaunch is wanted."""
    if is_torchrun_child() or not (os.environ.get("NPROC_PER_NODE") or os.environ.get("NNODES")):
        return
    check_spreadable(command, argv)
    check_gpus_per_node(int(os.environ.get("NPROC_PER_NODE", "1")))
    cmd = torchrun_command(command, argv, dict(os.environ))
    from rlhfx.redact import redact_argv

    print("rlhfx: launching", " ".join(redact_argv(cmd)), flush=True)
    child = subprocess.Popen(cmd)
    # Ctrl-C reaches torchrun and its workers from the terminal; a SIGTERM sent to this process is passed on, so the
    # workers save a checkpoint (rlhfx/training/guards.py) instead of being orphaned or killed mid-save
    forwarded = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: (forwarded.append(signum), child.send_signal(signum)))
    code = child.wait()
    sys.exit(128 + forwarded[0] if forwarded else code if code >= 0 else 128 - code)  # as a shell reports a signal
