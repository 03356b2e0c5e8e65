"""Padding-free batches: the real tokens of right-padded rows laid end to end in one row.

Position ids restart at every sequence, and transformers turns restarting positions into a block-diagonal
causal mask (sdpa, eager) or varlen kernels (flash attention), so no sequence attends to another and no
compute goes to padding. The per-token results are mapped back to their rows with `segments`.
"""

import torch


def padding_free(input_ids, attention_mask, labels=None):
    """Right-padded rows -> one row of their real tokens, positions restarting per sequence (no pad computed).

    Returns the model keywords, the flat labels if given (the first token of each sequence never scored
    across the seam) and each flat token's sequence index, for mapping per-token results back per sequence.
    """
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)
    starts = torch.cumsum(lengths, 0) - lengths
    segments = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    positions = torch.arange(int(lengths.sum()), device=lengths.device) - starts[segments]
    flat_labels = None
    if labels is not None:
        flat_labels = labels[keep].clone()
        flat_labels[starts] = -100
        flat_labels = flat_labels.unsqueeze(0)
    return {"input_ids": input_ids[keep].unsqueeze(0), "position_ids": positions.unsqueeze(0)}, flat_labels, segments


def packed_sequence_rewards(model, head, input_ids, attention_mask) -> torch.Tensor:
    """[batch] rewards of a scalar-head model read at each sequence's last token, computed padding-free.

    The sequence-classification wrapper pools at the last non-pad token of its (single, flat) row, so the
    per-token scores are taken from the head itself (`head`, e.g. `model.score`) by a forward hook.
    """
    kwargs, _, _ = padding_free(input_ids, attention_mask)
    captured = {}
    handle = head.register_forward_hook(lambda module, args, output: captured.update(scores=output))
    try:
        model(**kwargs, use_cache=False)
    finally:
        handle.remove()
    last = torch.cumsum(attention_mask.sum(dim=1), 0) - 1
    return captured["scores"][0, last, 0]
