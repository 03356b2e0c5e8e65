"""Load every dataset of a run into canonical rows: read, normalise, sample, mix, split."""

import json
import math
import random
from dataclasses import dataclass

from rlhfx.data.formats import KINDS, normalise_rows
from rlhfx.data.report import DropReport
from rlhfx.data.sources import RawDataset, read_dataset, read_validation, sample_rows
from rlhfx.errors import RlhfxError


@dataclass
class DataConfig:
    """What to load and how to read it.

    datasets: specs (registry name, file, json@DIR, hub id), each optionally ending in `#N`.
    kind: the canonical kind to produce: sft | pairwise | unpaired | prompt.
    dataset_probs: mixing weights (OpenRLHF --dataset_probs): rows are drawn from each dataset in these
        proportions; the total is the sum of the dataset sizes, or max_samples when given.
    val_datasets: validation specs. Without them, `split_dataset_ratio` > 0 holds out that share of
        the training rows (seeded); else registry datasets with a bundled validation file use it.
    max_samples: cap on the training rows (applied after mixing and the held-out split).
    *_key: the dataset's own name for a column (OpenRLHF --input_key is prompt_key, --output_key is
        response_key).
    columns: ms-swift's --columns, a JSON object `{"dataset column": "new name"}` applied to every row first.
    system: a system prompt for rows that have none.
    input_template: OpenRLHF --input_template, e.g. "User: {}\\nAssistant: " (see formats.py).
    desirable_threshold: unpaired rows with a numeric label (a score) are desirable when it is at least this.
    """

    datasets: list[str]
    kind: str
    dataset_probs: list[float] | None = None
    val_datasets: list[str] | None = None
    split_dataset_ratio: float = 0.0
    max_samples: int | None = None
    seed: int = 42
    prompt_key: str | None = None
    chosen_key: str | None = None
    rejected_key: str | None = None
    response_key: str | None = None
    label_key: str | None = None
    messages_key: str | None = None
    columns: str | None = None
    system: str | None = None
    input_template: str | None = None
    num_proc: int | None = None  # --dataset_num_proc
    model_name: list[str] | None = None  # self-cognition placeholders {{NAME}} / {{AUTHOR}}: [zh, en] or [both]
    model_author: list[str] | None = None
    desirable_threshold: float | None = None

    def renames(self) -> dict[str, str]:
        """--columns and the key flags as `{dataset_key: rlhfx_key}` (a key flag wins over --columns)."""
        flags = {
            "prompt": self.prompt_key, "chosen": self.chosen_key, "rejected": self.rejected_key,
            "response": self.response_key, "label": self.label_key, "messages": self.messages_key,
        }
        return {**self.column_renames(), **{source: target for target, source in flags.items() if source}}

    def column_renames(self) -> dict[str, str]:
        """--columns parsed: a JSON object of column name -> new name."""
        if not self.columns:
            return {}
        try:
            renames = json.loads(self.columns)
        except json.JSONDecodeError as e:
            renames = e
        if not isinstance(renames, dict) or not all(isinstance(v, str) for v in renames.values()):
            raise RlhfxError(f"--columns {self.columns!r} is not a JSON object of column names.",
                             """give old -> new names, e.g. --columns '{"answer": "solution", "question": "query"}'.""")
        return renames


def load_data(cfg: DataConfig) -> tuple[list[dict], list[dict] | None, DropReport]:
    """(train rows, validation rows or None, what was dropped and why)."""
    _check_config(cfg)
    report = DropReport()
    raws = [read_dataset(spec, cfg.num_proc) for spec in cfg.datasets]
    train = _mix([_rows(raw, cfg, report) for raw in raws], cfg)
    val = None
    if cfg.val_datasets:
        val = [row for spec in cfg.val_datasets
               for row in _rows(_as_validation(read_dataset(spec, cfg.num_proc)), cfg, report)]
    elif cfg.split_dataset_ratio > 0:
        train, val = _split(train, cfg.split_dataset_ratio, cfg.seed)
    else:
        bundled = [v for v in map(read_validation, raws) if v is not None]
        if bundled:
            val = [row for raw in bundled for row in _rows(raw, cfg, report)]
    if cfg.max_samples is not None and len(train) > cfg.max_samples:
        train = sample_rows(train, cfg.max_samples, cfg.seed)
    return train, val, report


def _as_validation(raw: RawDataset) -> RawDataset:
    raw.name += " (val)"  # keeps its drop counts apart from the same file used for training
    return raw


def _rows(raw: RawDataset, cfg: DataConfig, report: DropReport) -> list[dict]:
    renames = {**(raw.columns or {}), **cfg.renames()}
    present = {key for row in raw.rows if isinstance(row, dict) for key in row}
    missing = [column for column in cfg.column_renames() if column not in present]
    if missing:
        raise RlhfxError(f"--columns renames {', '.join(missing)}, but {raw.name} has no such column (its columns: "
                         f"{', '.join(sorted(present)) or 'none'}).", "name columns the dataset has, or drop them.")
    if cfg.model_name or cfg.model_author:
        fill_self_cognition(raw.rows, cfg.model_name, cfg.model_author)
    rows = normalise_rows(raw.rows, cfg.kind, raw.name, report, renames=renames,
                          system=cfg.system, input_template=cfg.input_template,
                          desirable_threshold=cfg.desirable_threshold)
    if raw.take is None:
        return rows
    rows = sample_rows(rows, raw.take, cfg.seed)
    report.sampled(raw.name, len(rows))
    return rows


def fill_self_cognition(rows: list, names: list[str] | None, authors: list[str] | None) -> int:
    """ms-swift's self-cognition rows: {{NAME}} and {{AUTHOR}} in every string of a row become --model_name and
    --model_author (given as [Chinese, English]: rows tagged `zh` take the first). Returns the rows changed."""
    changed = 0
    for row in rows:
        if not isinstance(row, dict):
            continue
        pick = 0 if row.get("tag") == "zh" else -1
        fills = {"{{NAME}}": names[pick] if names else None, "{{AUTHOR}}": authors[pick] if authors else None}
        before = json.dumps(row, ensure_ascii=False)
        row.update({key: _fill(value, fills) for key, value in row.items()})
        changed += json.dumps(row, ensure_ascii=False) != before
    return changed


def _fill(value, fills: dict):
    if isinstance(value, str):
        for placeholder, text in fills.items():
            if text is not None:
                value = value.replace(placeholder, text)
        return value
    if isinstance(value, list):
        return [_fill(v, fills) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, fills) for k, v in value.items()}
    return value


def _mix(parts: list[list[dict]], cfg: DataConfig) -> list[dict]:
    if cfg.dataset_probs is None:
        return [row for part in parts for row in part]
    total = cfg.max_samples or sum(len(part) for part in parts)
    counts = _apportion(total, cfg.dataset_probs)
    rows = [row for part, n in zip(parts, counts) for row in sample_rows(part, n, cfg.seed)]
    random.Random(cfg.seed).shuffle(rows)
    return rows


def _apportion(total: int, weights: list[float]) -> list[int]:
    """Split `total` into integers proportional to `weights` (largest remainders get the leftovers)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _split(rows: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    n_val = math.ceil(len(rows) * ratio)
    if n_val >= len(rows):
        raise RlhfxError(
            f"--split_dataset_ratio {ratio} holds out all {len(rows)} training rows.",
            "Use a smaller ratio, more data, or --val_dataset.",
        )
    held_out = set(random.Random(seed).sample(range(len(rows)), n_val))
    train = [row for i, row in enumerate(rows) if i not in held_out]
    return train, [rows[i] for i in sorted(held_out)]


def _check_config(cfg: DataConfig) -> None:
    if cfg.kind not in KINDS:
        raise RlhfxError(f"Unknown data kind '{cfg.kind}'.", f"Use one of {', '.join(KINDS)}.")
    if not cfg.datasets:
        raise RlhfxError("No training dataset given.", "Pass --dataset NAME_OR_PATH (a registry name, file or hub id).")
    probs = cfg.dataset_probs
    if probs is not None and (len(probs) != len(cfg.datasets) or min(probs) < 0 or sum(probs) <= 0):
        raise RlhfxError(
            f"--dataset_probs {probs} does not fit the {len(cfg.datasets)} datasets given.",
            "Give one non-negative weight per --dataset, not all zero.",
        )
    if not 0 <= cfg.split_dataset_ratio < 1:
        raise RlhfxError(f"--split_dataset_ratio is {cfg.split_dataset_ratio}.", "Use a value in [0, 1).")
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise RlhfxError(f"--max_samples is {cfg.max_samples}.", "Use a positive number, or leave it unset.")
    cfg.column_renames()  # bad JSON fails before any dataset is read
    if cfg.input_template is not None and "{}" not in cfg.input_template:
        raise RlhfxError(
            f"--input_template {cfg.input_template!r} has no '{{}}' for the prompt.",
            'Put {} where the prompt goes, e.g. "User: {}\\nAssistant: ".',
        )
