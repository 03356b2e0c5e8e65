"""Endless, rank-sharded, seeded batches of an SFT data set, for algorithms that train on it beside their own data
(the joint SFT + DPO modes, CHORD's expert batches in online RL)."""

import math

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


class CyclingBatches:
    """Endless batches over `rows`, restarting with its own epoch counter.

    Each epoch is a fresh permutation from a generator seeded with (seed, salt, epoch), identical on
    every rank; global batch b holds positions [b*B*W, (b+1)*B*W) of it (B = batch_size, W = world
    size) and rank r takes its B rows at offset r*B. The last, short global batch wraps around to the
    start of the epoch's order, so every rank always gets B rows (as DistributedSampler pads).
    `peek()` returns the batch `next()` will return, without consuming it.
    """

    def __init__(self, rows, batch_size: int, collate, seed: int, salt: int = 0, rank: int = 0,
                 world: int = 1, shuffle: bool = True):
        """rows: anything with len() and integer indexing that gives a row dict (a list, a datasets.Dataset)."""
        if len(rows) == 0:
            raise ValueError("CyclingBatches needs at least one row")
        self.rows, self.batch_size, self.collate = rows, batch_size, collate
        self.seed, self.salt, self.rank, self.world, self.shuffle = seed, salt, rank, world, shuffle
        self.batches_per_epoch = max(1, math.ceil(len(rows) / (batch_size * world)))
        self.epoch, self.batch, self.drawn = 0, 0, 0
        self._order_epoch, self._order, self._peeked = None, None, None

    def _epoch_order(self) -> list[int]:
        if self._order_epoch != self.epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.salt * 7_919 + self.epoch)
                self._order = torch.randperm(len(self.rows), generator=generator).tolist()
            else:
                self._order = list(range(len(self.rows)))
            self._order_epoch = self.epoch
        return self._order

    def indices(self) -> list[int]:
        """Row indices of this rank's next batch."""
        order = self._epoch_order()
        start = (self.batch * self.world + self.rank) * self.batch_size
        return [order[(start + i) % len(order)] for i in range(self.batch_size)]

    def peek(self):
        if self._peeked is None:
            self._peeked = self.collate([self.rows[i] for i in self.indices()])
        return self._peeked

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.peek()
        self._peeked = None
        self.drawn += 1
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "batches_per_epoch": self.batches_per_epoch,
                "drawn": self.drawn}

    def seek(self, position: dict) -> None:
        """Continue from a `position()` (resume); the epoch's order is recomputed from the seed."""
        self.epoch, self.batch, self.drawn, self._peeked = position["epoch"], position["batch"], position["drawn"], None


def sft_example(row: dict) -> dict:
    """Encoder output -> collator input: labels are the ids on assistant tokens and -100 elsewhere."""
    return {"input_ids": row["input_ids"],
            "labels": [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]}


def sft_collator(pad_token_id: int):
    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
    return lambda rows: collate([sft_example(r) for r in rows])
