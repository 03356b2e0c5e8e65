"""JSONL results, written atomically: rows go to a temp file beside the target, renamed into place at
the end, so a crash never leaves a file that looks complete."""

import json
import os
import tempfile
from pathlib import Path

from rlhfx.errors import RlhfxError


def write_jsonl_atomic(path: Path | str, rows: list[dict]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RlhfxError(f"Cannot create folder {path.parent}: {error.strerror}.", "pass a writable --output_file.") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_jsonl(path: Path | str) -> list[dict]:
    """Rows of a JSONL file (or a JSON list), with a clear error for a missing, empty or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise RlhfxError(f"Input file {path} does not exist.", "check the path.")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise RlhfxError(f"Input file {path} is empty.", "pass a file with one JSON object per line.")
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise RlhfxError(f"Line {number} of {path} is not valid JSON: {error.msg}.",
                                     "write one JSON object per line.") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise RlhfxError(f"Row {bad} of {path} is not a JSON object.", "write one JSON object per line.")
    return rows
