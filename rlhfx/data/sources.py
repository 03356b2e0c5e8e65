"""Read a dataset spec into raw rows.

A spec is a registry name (`demo-pref`), a local `.json`/`.jsonl`/`.csv`/`.parquet` file, `json@DIR`
(every .json/.jsonl file of a folder) or a hub id `org/name[:subset]`, optionally ending in `#N`
(take N rows, see `sample_rows`). Rows come back as read; `formats.py` decides what they mean.
"""

import csv
import difflib
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.registry.datasets import bundled_path, dataset_names, get_dataset_entry

FILE_EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
_TAKE = re.compile(r"^(.*)#(\d+)$")


@dataclass
class RawDataset:
    name: str  # the spec as written: names the dataset in messages and in the drop report
    rows: list
    take: int | None = None  # the `#N` suffix
    columns: dict[str, str] | None = None  # registry renames, {source_key: rlhfx_key}
    val_source: str | None = None  # registry validation source


def split_take(spec: str) -> tuple[str, int | None]:
    """`'data.jsonl#100'` -> `('data.jsonl', 100)`; no suffix -> `(spec, None)`."""
    match = _TAKE.match(spec)
    if not match:
        return spec, None
    n = int(match.group(2))
    if n == 0:
        raise RlhfxError(f"Dataset spec '{spec}' asks for 0 rows.", "Use '#N' with N >= 1, or drop the suffix.")
    return match.group(1), n


def read_dataset(spec: str, num_proc: int | None = None) -> RawDataset:
    """num_proc: processes `datasets` prepares a hub dataset with (ms-swift's --dataset_num_proc)."""
    spec = spec.strip()
    base, take = split_take(spec)
    entry = get_dataset_entry(base)
    if entry is not None:
        return RawDataset(spec, read_source(entry.source, entry.split, num_proc), take, entry.columns, entry.val_source)
    return RawDataset(spec, read_source(base, num_proc=num_proc), take)


def read_validation(raw: RawDataset) -> RawDataset | None:
    """The registry's validation set for `raw`, or None when it has none."""
    if raw.val_source is None:
        return None
    base, _ = split_take(raw.name)
    return RawDataset(f"{base} (val)", read_source(raw.val_source), None, raw.columns)


def read_source(source: str, split: str = "train", num_proc: int | None = None) -> list:
    bundled = bundled_path(source)
    if bundled is not None:
        return read_file(bundled)
    if source.startswith("json@"):
        return _read_json_dir(Path(source.removeprefix("json@")))
    path = Path(source)
    if path.is_dir():
        raise RlhfxError(f"Dataset '{source}' is a folder.",
                         f"Use 'json@{source}' to read every .json/.jsonl file in it.")
    if path.exists() or path.suffix.lower() in FILE_EXTENSIONS:
        return read_file(path)
    if _HUB_ID.match(source):
        return _read_hub(source, split, num_proc)
    raise _unknown_name(source)


def read_file(path: Path) -> list:
    ext = path.suffix.lower()
    if ext not in FILE_EXTENSIONS:
        raise RlhfxError(
            f"Dataset file '{path}' has an unsupported extension '{ext}'.",
            f"Convert it to one of {', '.join(FILE_EXTENSIONS)}.",
        )
    if not path.is_file():
        raise RlhfxError(f"Dataset file '{path}' does not exist.",
                         "Check the path (relative paths start at the current folder).")
    if ext == ".parquet":
        rows = _read_parquet(path)
    else:
        text = _read_text(path)
        rows = _read_csv(text, path) if ext == ".csv" else _read_json(text, path)
    if not rows:
        raise RlhfxError(f"Dataset file '{path}' contains no rows.", "Add rows to it, or remove it from --dataset.")
    return rows


def sample_rows(rows: list, n: int, seed: int) -> list:
    """`n` rows as ms-swift takes them: a seeded random subset (file order kept) when n <= len(rows),
    else whole copies of the rows plus a random subset for the remainder."""
    repeats, rest = divmod(n, len(rows))
    picked = sorted(random.Random(seed).sample(range(len(rows)), rest))
    return rows * repeats + [rows[i] for i in picked]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise RlhfxError(f"Dataset file '{path}' is empty.", "Fill it with rows, or remove it from --dataset.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RlhfxError(
            f"Dataset file '{path}' is not UTF-8 text (bad byte at offset {e.start}, line {line}).",
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`.",
        ) from None


def _read_json(text: str, path: Path) -> list:
    """A JSON array of objects, one JSON object, or JSON Lines (whichever the text is)."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RlhfxError(
                f"Dataset file '{path}' is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.",
                "Fix the JSON there; the file must be a list of objects or one object per line.",
            ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return _read_json_lines(text, path)
    if not isinstance(value, dict):
        raise RlhfxError(
            f"Dataset file '{path}' holds a JSON {type(value).__name__}, not rows.",
            "Write a list of objects, or one JSON object per line.",
        )
    return [value]


def _read_json_lines(text: str, path: Path) -> list:
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise RlhfxError(
                f"Dataset file '{path}' line {lineno} is not valid JSON ({e.msg}, column {e.colno}).",
                "Fix or delete that line: each line of a JSON Lines file must be one complete JSON object.",
            ) from None
    return rows


def _read_csv(text: str, path: Path) -> list:
    csv.field_size_limit(2**31 - 1)  # long responses exceed the 128 KiB default
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        # Cells beyond the header land under the key None; drop them rather than invent a column.
        return [{k: v for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as e:
        raise RlhfxError(
            f"Dataset file '{path}' is not valid CSV at line {reader.line_num}: {e}.", "Fix the quoting on that line."
        ) from None


def _read_parquet(path: Path) -> list:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        raise RlhfxError(f"Dataset file '{path}' is not a readable Parquet file: {e}.",
                         "Re-export it as Parquet, or use JSONL.") from None


def _read_json_dir(folder: Path) -> list:
    if not folder.is_dir():
        raise RlhfxError(f"'json@{folder}' does not name a folder.", "Check the path after 'json@'.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".jsonl"))
    if not files:
        raise RlhfxError(f"Folder '{folder}' has no .json or .jsonl files.",
                         "Put the data files there, or fix the path after 'json@'.")
    return [row for f in files for row in read_file(f)]


def _read_hub(source: str, split: str, num_proc: int | None = None) -> list:
    repo, _, subset = source.partition(":")
    try:
        import datasets
    except ImportError:
        raise RlhfxError(f"Loading hub dataset '{source}' needs the `datasets` package.",
                         "pip install datasets") from None
    try:
        ds = datasets.load_dataset(repo, subset or None, split=split, num_proc=num_proc)
    except Exception as e:  # any failure of the hub or the loader script is the user's to fix
        raise RlhfxError(
            f"Could not load hub dataset '{source}' (split '{split}'): {e}",
            "Check the id, the network and HF_TOKEN (offline it must already be cached); "
            "if you meant a local file, check its path.",
        ) from None
    return ds.to_list()


def _unknown_name(name: str) -> RlhfxError:
    close = difflib.get_close_matches(name, dataset_names(), n=3, cutoff=0.6)
    what = f"Dataset '{name}' is not a registered name, an existing file, json@DIR or a hub id (org/name)."
    if close:
        return RlhfxError(what, "Did you mean " + " or ".join(f"'{c}'" for c in close) + "?")
    return RlhfxError(what, f"Use a registered name ({', '.join(dataset_names())}), a file path or a hub id.")
