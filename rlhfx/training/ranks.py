"""A guard for distributed runs: every rank must end with the same weights.

DDP and ZeRO synchronise gradients, so the replicas never diverge; if they do, something in the
launch is wrong (ranks training separately) and the saved checkpoint would be one rank's guess.
"""

import contextlib

import torch

from rlhfx.errors import RlhfxError


def weight_fingerprint(model) -> torch.Tensor:
    """Two float64 moments per parameter tensor: cheap, and exact-equal for identical weights.

    Under ZeRO-3 each rank holds a shard of every parameter (`ds_id`); they are gathered whole first.
    """
    params = list(model.parameters())
    gather = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params)
    with gather:
        rows = [torch.stack([p.detach().double().sum(), p.detach().double().pow(2).sum()]) for p in params]
    return torch.stack(rows).cpu()


def check_ranks_agree(model) -> list[float] | None:
    """All-gather the fingerprints; raise if any rank differs. Returns one checksum per rank, None when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    local = weight_fingerprint(model)
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RlhfxError("The ranks finished with different weights: gradients were not synchronised.",
                         "launch through `NPROC_PER_NODE=N rlhfx ...` (torchrun) rather than starting processes by hand.")
    return [g.sum().item() for g in gathered]


def end_ranks() -> None:
    """Wait for every rank to finish writing, then take the process group down in order. Left to interpreter
    exit, a rank that ends first can tear down gloo under another one still using it (seen once as
    "terminate called without an active exception", SIGABRT, in a 2-process CPU run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
