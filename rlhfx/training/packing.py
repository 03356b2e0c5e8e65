"""Padding-free batches: the real tokens of right-padded rows laid end to end in rows of a fixed capacity.

Sequences are placed first-fit into rows of `capacity` tokens (--max_length); position ids restart at every
sequence, and transformers turns restarting positions into a block-diagonal causal mask (sdpa, eager) or
varlen kernels (flash attention), so no sequence attends to another. Rows, rather than one long row, keep
sdpa's dense mask small on CPUs; the filler at a row's end is a sequence of its own that nothing reads.
FlashAttention reads sequence starts from the position ids of a single row only (with several rows it would
let sequences attend across seams), so under it everything goes into one row (`row_capacity`).
`segments` maps every packed position back to its sequence (-1 for filler).
"""

import torch


def row_capacity(model, max_length: int) -> int | None:
    """Tokens per packed row for `model`'s attention kernel: one row for FlashAttention (None), else --max_length."""
    return None if "flash" in (getattr(model.config, "_attn_implementation", None) or "") else max_length


def padding_free(input_ids, attention_mask, labels=None, capacity: int | None = None, pad_token_id: int = 0):
    """Right-padded [n, L] rows -> packed [rows, width] model keywords, packed labels (or None), segments.

    `capacity` None lays every sequence in one row. The first token of each sequence gets label -100, so
    nothing is scored across a seam.
    """
    lengths = attention_mask.sum(dim=1).tolist()
    capacity = sum(lengths) if capacity is None else max(capacity, max(lengths))
    rows, used = [], []
    for index, length in enumerate(lengths):
        row = next((r for r, filled in enumerate(used) if filled + length <= capacity), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(index)
        used[row] += length
    width = max(used)
    packed_ids = input_ids.new_full((len(rows), width), pad_token_id)
    positions = torch.zeros_like(packed_ids)
    segments = torch.full_like(packed_ids, -1)
    packed_labels = torch.full_like(packed_ids, -100) if labels is not None else None
    for r, members in enumerate(rows):
        at = 0
        for index in members:
            length = lengths[index]
            packed_ids[r, at:at + length] = input_ids[index, :length]
            positions[r, at:at + length] = torch.arange(length)
            segments[r, at:at + length] = index
            if labels is not None:
                packed_labels[r, at + 1:at + length] = labels[index, 1:length]
            at += length
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": packed_ids, "position_ids": positions}, packed_labels, segments


def sum_per_sequence(token_values: torch.Tensor, segments: torch.Tensor, count: int) -> torch.Tensor:
    """[count] sums of next-token values ([rows, width - 1], as a causal LM's shifted log-probs) per sequence."""
    targets = segments[:, 1:]
    real = targets >= 0
    return token_values.new_zeros(count).index_add(0, targets[real], token_values[:, -targets.size(1):][real])


def packed_sequence_rewards(model, head, input_ids, attention_mask, capacity: int | None = None) -> torch.Tensor:
    """[batch] rewards of a scalar-head model read at each sequence's last token, computed padding-free.

    The sequence-classification wrapper pools one position per row, so the per-token scores are taken from
    the head itself (`head`, e.g. `model.score`) by a forward hook.
    """
    kwargs, _, segments = padding_free(input_ids, attention_mask, capacity=capacity)
    captured = {}
    handle = head.register_forward_hook(lambda module, args, output: captured.update(scores=output))
    try:
        model(**kwargs, use_cache=False)
    finally:
        handle.remove()
    flat_segments = segments.reshape(-1)
    real = flat_segments >= 0
    where = torch.arange(flat_segments.numel(), device=segments.device)
    last = torch.zeros(input_ids.size(0), dtype=torch.long, device=segments.device).scatter_reduce(
        0, flat_segments[real], where[real], reduce="amax", include_self=False)
    scores = captured["scores"]
    return scores.reshape(-1, scores.size(-1))[last, 0]


class PackedRowsCollator:
    """TRL's packed SFT rows kept as separate rows for sdpa and eager attention.

    TRL's padding-free collator lays the whole batch end to end in one row, the layout FlashAttention's varlen
    kernels need; sdpa and eager build a dense block-diagonal mask over that row instead, which grows with the
    square of the batch. Here position ids restart at every sample and at the padding after it (a filler
    sequence nothing reads) and no attention mask is passed, so transformers builds the block-diagonal mask row
    by row; a sample's first token is not scored, as in TRL's layout (it would be predicted across a seam).
    """

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        positions = batch["position_ids"]
        for row, length in enumerate(batch.pop("attention_mask").sum(dim=1).tolist()):
            positions[row, length:] = torch.arange(positions.size(1) - length)
        batch["labels"][positions == 0] = -100
        return batch

