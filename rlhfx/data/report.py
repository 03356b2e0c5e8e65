"""Counts of the rows each dataset kept and dropped, and why, so that no row disappears silently."""

from collections import Counter


class DropReport:
    """Per-dataset tallies of kept rows and dropped rows by reason.

    Reasons are free strings ("missing key", "wrong type", "empty", "chosen == rejected",
    "bad roles", "prompt mismatch", and later "too long" from the tokenising code). For each
    (dataset, reason) the first dropped row is kept as an example for error messages. Row indices
    are 0-based positions in the dataset as read; kept counts are source rows. A `#N` spec then takes
    N of the kept rows (`sampled`): the summary says how many the run uses.
    """

    def __init__(self) -> None:
        self._kept: dict[str, int] = {}
        self._used: dict[str, int] = {}
        self._dropped: dict[str, Counter] = {}
        self._examples: dict[str, dict[str, dict]] = {}

    def add(self, reason: str, dataset: str, row_index: int, detail: str | None = None) -> None:
        """Count one dropped row; `detail` says what exactly was wrong with it."""
        self._dropped.setdefault(dataset, Counter())[reason] += 1
        examples = self._examples.setdefault(dataset, {})
        examples.setdefault(reason, {"row": row_index, "detail": detail})

    def kept(self, dataset: str, n: int) -> None:
        """Record that `n` more rows of `dataset` were kept."""
        self._kept[dataset] = self._kept.get(dataset, 0) + n

    def sampled(self, dataset: str, n: int) -> None:
        """Record that a `#N` spec made the run use `n` of the kept rows of `dataset` (fewer, or repeats)."""
        self._used[dataset] = n

    def merge(self, other: "DropReport") -> None:
        """Fold another report's tallies into this one (a run that loads two data sets)."""
        for name, n in other._kept.items():
            self.kept(name, n)
        self._used.update(other._used)
        for name, counter in other._dropped.items():
            self._dropped.setdefault(name, Counter()).update(counter)
            for reason, example in other._examples[name].items():
                self._examples.setdefault(name, {}).setdefault(reason, example)

    @property
    def total_dropped(self) -> int:
        return sum(sum(c.values()) for c in self._dropped.values())

    def dropped(self, dataset: str) -> int:
        return sum(self._dropped.get(dataset, Counter()).values())

    def kept_count(self, dataset: str) -> int:
        return self._kept.get(dataset, 0)

    def counts(self) -> dict[str, int]:
        """Dropped rows per reason over all datasets, most frequent first."""
        total: Counter = Counter()
        for c in self._dropped.values():
            total.update(c)
        return dict(total.most_common())

    def top_reason(self, dataset: str) -> tuple[str, int, str | None] | None:
        """(reason, example row index, detail) of the most frequent drop reason of `dataset`."""
        counter = self._dropped.get(dataset)
        if not counter:
            return None
        reason = counter.most_common(1)[0][0]
        example = self._examples[dataset][reason]
        return reason, example["row"], example["detail"]

    def _datasets(self) -> list[str]:
        return list(dict.fromkeys([*self._kept, *self._dropped]))

    def summary_lines(self) -> list[str]:
        lines = []
        for name in self._datasets():
            kept, dropped = self.kept_count(name), self.dropped(name)
            line = f"{name}: kept {kept} of {kept + dropped} rows"
            if name in self._used:
                line += f", of which the #N suffix takes {self._used[name]}"
            if dropped:
                parts = []
                for reason, n in self._dropped[name].most_common():
                    example = self._examples[name][reason]
                    where = f"row {example['row']}" + (f": {example['detail']}" if example["detail"] else "")
                    parts.append(f"{reason} {n} (e.g. {where})")
                line += f"; dropped {dropped}: " + ", ".join(parts)
            lines.append(line)
        return lines

    def to_dict(self) -> dict:
        return {
            "total_dropped": self.total_dropped,
            "counts": self.counts(),
            "datasets": {
                name: {
                    "kept": self.kept_count(name),
                    **({"used": self._used[name]} if name in self._used else {}),
                    "dropped": dict(self._dropped.get(name, Counter()).most_common()),
                    "examples": self._examples.get(name, {}),
                }
                for name in self._datasets()
            },
        }
