"""Where a run writes: output/<model_type>/v<N>-<timestamp>/ unless --output_dir / --save_path is given."""

import json
import os
import re
import time
from pathlib import Path

from rlhfx.errors import RlhfxError

STAMP_ENV = "RLHFX_RUN_STAMP"  # set by the torchrun relaunch so every rank picks the same folder


def run_stamp() -> str:
    return os.environ.get(STAMP_ENV) or time.strftime("%Y%m%d-%H%M%S")


def versioned_dir(root: Path, stamp: str) -> Path:
    """root/v<N>-<stamp>, N one past the highest existing version; reuses a folder with the same stamp."""
    existing = [p for p in root.glob("v*-*") if p.is_dir()] if root.exists() else []
    for path in existing:
        if path.name.endswith(f"-{stamp}"):
            return path
    versions = [int(m.group(1)) for p in existing if (m := re.match(r"v(\d+)-", p.name))]
    return root / f"v{max(versions, default=-1) + 1}-{stamp}"


def default_root(model_type: str) -> Path:
    return Path("output") / model_type


def resolve_output_dir(output_dir: str | None, model_type: str) -> Path:
    if output_dir:
        return Path(output_dir)
    return versioned_dir(default_root(model_type), run_stamp())


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def check_can_create(path: Path, flag: str) -> None:
    """Fail before any work when `path` could not be written: the nearest existing folder above it must be writable."""
    existing = next(parent for parent in Path(path).parents if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "a folder" if not existing.is_dir() else "writable"
        raise RlhfxError(f"Cannot create {path}: {existing} is not {what}.", f"pass a writable {flag}.")
