"""Flags that change where and how big the model runs: DeepSpeed presets and model parallel (the attention kernel and
QLoRA keywords of from_pretrained are in rlhfx.models.load).

Each check runs before any weights load, so a launch that cannot work fails in a second with a fix,
not after minutes of loading. The ZeRO presets ship inside the package (rlhfx/configs/deepspeed) so they
are found after `pip install`; their "auto" fields are filled by transformers from the batch/lr flags.
"""

import difflib
import json
import os
from pathlib import Path

from rlhfx.errors import RlhfxError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "deepspeed"
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))


def deepspeed_config(value: str | None) -> dict | None:
    """--deepspeed zero2 (a shipped preset) or a path to a JSON config -> the config as a dict."""
    if not value:
        return None
    path = PRESET_DIR / f"{value}.json" if value in PRESETS else Path(value).expanduser()
    if not path.is_file():
        if value.endswith(".json"):
            raise RlhfxError(f"DeepSpeed config {value} does not exist.", "pass an existing .json file or a preset: "
                             + ", ".join(PRESETS) + ".")
        close = difflib.get_close_matches(value, PRESETS, n=1)
        raise RlhfxError(f"Unknown --deepspeed preset {value!r}.",
                         f"did you mean {close[0]}?" if close else f"choose one of {', '.join(PRESETS)}, or a .json path.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RlhfxError(f"DeepSpeed config {path} is not valid JSON: {error}.") from None


def apply_openrlhf_zero_flags(args) -> None:
    """OpenRLHF's `--zero_stage N [--adam_offload]` set --deepspeed to the preset zeroN[_offload], once, before
    anything reads it (and so args.json records the preset)."""
    if args.zero_stage is None and not args.adam_offload:
        return
    if args.zero_stage is not None and args.deepspeed:
        raise RlhfxError(f"--zero_stage {args.zero_stage} and --deepspeed {args.deepspeed} both choose the DeepSpeed "
                         "config.", "give one of them.")
    preset = f"zero{args.zero_stage}" if args.zero_stage is not None else args.deepspeed
    if args.adam_offload:
        if preset not in ("zero2", "zero3"):
            raise RlhfxError("--adam_offload needs ZeRO stage 2 or 3.",
                             "add --zero_stage 2 (or 3, or --deepspeed zero2), or drop --adam_offload.")
        preset += "_offload"
    args.values["deepspeed"] = preset


def zero_stage(config: dict | None) -> int | None:
    return None if config is None else int(config.get("zero_optimization", {}).get("stage", 0))


def _is_torchrun_child() -> bool:
    return "LOCAL_RANK" in os.environ


def check_launch(args, ds_config: dict | None) -> None:
    """Refuse launches that cannot work: DeepSpeed that would use one of several GPUs, model parallel under ZeRO/DDP.

    A one-process DeepSpeed run gets the rendezvous environment torchrun would have set."""
    import torch

    if ds_config is not None:
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise RlhfxError("--deepspeed needs the deepspeed package, which is not installed.",
                             "pip install 'rlhfx[deepspeed]' (or drop --deepspeed).") from None
        gpus = torch.cuda.device_count()
        if gpus > 1 and not _is_torchrun_child():
            raise RlhfxError(f"--deepspeed with {gpus} GPUs visible but one process: only one GPU would be used.",
                             f"launch with NPROC_PER_NODE={gpus} rlhfx ... (or set CUDA_VISIBLE_DEVICES to one GPU).")
        zero = ds_config.get("zero_optimization", {})
        if not torch.cuda.is_available() and ("offload_optimizer" in zero or "offload_param" in zero):
            raise RlhfxError(f"--deepspeed {args.deepspeed} offloads GPU memory to the CPU, but no CUDA GPU is visible "
                             "(DeepSpeed's CPU optimizer does not run here).",
                             "use --deepspeed zero2 or zero3 on the CPU; keep the _offload presets for GPU machines.")
    if args.device_map:
        if ds_config is not None:
            raise RlhfxError(f"--device_map {args.device_map} (one model split over GPUs) cannot run under --deepspeed "
                             f"{args.deepspeed}: ZeRO{'-3' if zero_stage(ds_config) == 3 else ''} places the weights itself.",
                             "drop --device_map (ZeRO-3 already shards the model over the GPUs) or drop --deepspeed.")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RlhfxError("--device_map splits one model over the GPUs of a single process; it cannot run with "
                             "several processes (NPROC_PER_NODE/NNODES).",
                             "unset NPROC_PER_NODE/NNODES, or drop --device_map and use --deepspeed zero3.")
        if not torch.cuda.is_available():
            raise RlhfxError(f"--device_map {args.device_map} needs CUDA GPUs; none is visible.", "drop --device_map.")
    if ds_config is not None:
        single_process_env()  # last: a refused launch leaves the environment as it was


def single_process_env() -> None:
    """DeepSpeed reads its rank and rendezvous from the environment: give a one-process run the values torchrun would."""
    import socket

    if _is_torchrun_child():
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})


def aux_loss_coef(args, model) -> float | None:
    """--aux_loss_coef only means something for Mixture-of-Experts models, which return a router loss."""
    if args.aux_loss_coef is not None and not hasattr(model.config.get_text_config(), "output_router_logits"):
        raise RlhfxError(f"--aux_loss_coef {args.aux_loss_coef}: {type(model).__name__} is not a Mixture-of-Experts "
                         "model, so there is no router load-balancing loss to weight.", "drop --aux_loss_coef.")
    return args.aux_loss_coef
