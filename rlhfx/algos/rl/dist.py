"""This process's place among the data-parallel ranks, and the reductions every statistic goes through.

Alone (one process) every reduction is the identity, so one code path serves both.
"""

import torch


class Ranks:
    def __init__(self, rank: int = 0, world: int = 1, device=None):
        self.rank, self.world, self.device = rank, world, device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over the ranks (a copy; no gradient)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        total = tensor.detach().to(self.device, torch.float64 if tensor.is_floating_point() else tensor.dtype).clone()
        dist.all_reduce(total)
        return total.to(tensor.device, tensor.dtype)

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        total = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
        return total.item()

    def gather(self, values: list) -> list:
        """Every rank's list, concatenated in rank order (small Python objects: rewards, log lines)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, list(values))
        return [value for part in parts for value in part]

    def mean(self, value: float) -> float:
        return self.sum(torch.tensor([float(value)], dtype=torch.float64)).item() / self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
