"""Where a run writes: output/<model_type>/v<N>-<timestamp>/ unless --output_dir / --save_path is given."""

import json
import os
import re
import time
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.redact import redact

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
    """`data` as JSON, secrets redacted (rlhfx.redact): every args.json, state.json and summary goes through here."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(redact(data), indent=2, default=str) + "\n")
    tmp.replace(path)


def check_can_create(path: Path, flag: str) -> None:
    """Fail before any work when `path` could not be written: the nearest existing folder above it must be writable."""
    existing = next(parent for parent in Path(path).parents if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "a folder" if not existing.is_dir() else "writable"
        raise RlhfxError(f"Cannot create {path}: {existing} is not {what}.", f"pass a writable {flag}.")


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds (part of) an rlhfx training run: its args.json, checkpoints or checkpoint staging."""
    if (folder / ".staging").is_dir() or any(re.match(r"checkpoint-\d+$", p.name) for p in folder.iterdir()):
        return True
    try:
        return "rlhf_type" in json.loads((folder / "args.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_output_folder(output_dir: Path, models: list[str | None], overwrite: bool) -> None:
    """Refuse an --output_dir that is, lies inside or holds a model folder the run reads (saving would overwrite
    its weights), or that already holds files of the user's that are not an rlhfx run (the run would replace their
    README.md and write weights among them). --overwrite_output_dir writes there anyway."""
    from rlhfx.training.lock import LOCK_FILE

    if overwrite:
        return
    out = Path(output_dir).resolve()
    for model in models:
        if model and Path(model).is_dir():
            base = Path(model).resolve()
            where = ("is" if out == base else "lies inside" if base in out.parents
                     else "holds" if out in base.parents else None)
            if where:
                raise RlhfxError(f"--output_dir {output_dir} {where} the model folder {model}: saving the run there "
                                 "would overwrite the model's weights and README.md.",
                                 "pass another --output_dir (or --overwrite_output_dir to write there anyway).")
    if Path(output_dir).is_dir() and not is_run_folder(Path(output_dir)):
        found = sorted(p.name for p in Path(output_dir).iterdir() if p.name != LOCK_FILE)
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise RlhfxError(f"--output_dir {output_dir} already holds files that are not an rlhfx run ({shown}); "
                             "the run would replace its README.md and write weights among them.",
                             "pass a new or empty folder (or --overwrite_output_dir to write there anyway).")
