"""The weight-sync group: a torch.distributed process group of its own between the trainer's rank 0 (rank 0 here,
the sender) and every process of every rollout engine (ranks 1, 2, ...), over which new weights are broadcast
tensor by tensor. It is built standalone (a TCPStore that rank 0 serves, then a ProcessGroupNCCL or
ProcessGroupGloo on it), so it lives beside whatever default group (DDP, DeepSpeed, vLLM's tensor parallel one) a
process has. With gloo on GPUs the tensors travel through host memory, one at a time.

The receivers must know what comes: the sender's (name, dtype, shape) list (`specs`), in the order it sends; plain
strings and ints, so it travels to vLLM's worker processes as any call's arguments do.
"""

from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch

BACKENDS = ("nccl", "gloo")
TIMEOUT = timedelta(minutes=30)  # a receiver waits this long for rank 0 (a slow ZeRO-3 gather, a long update)


class WeightGroup:
    def __init__(self, host: str, port: int, rank: int, world: int, backend: str):
        """Blocks until all `world` ranks have joined (rank 0 serves the rendezvous at host:port)."""
        from torch import distributed

        store = distributed.TCPStore(host, port, world, is_master=rank == 0, timeout=TIMEOUT)
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.group = distributed.ProcessGroupNCCL(store, rank, world)
        else:
            self.device = torch.device("cpu")
            self.group = distributed.ProcessGroupGloo(store, rank, world, TIMEOUT)
        self.store = store  # rank 0's serves the others for the group's lifetime

    def _broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, 0).wait()  # rank 0 is the root

    def send(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Rank 0: each tensor to every receiver, in the order of the receivers' specs."""
        for _, tensor in named:
            self._broadcast(tensor.detach().to(self.device).contiguous())

    def receive(self, specs: list[tuple[str, str, list[int]]]) -> Iterator[tuple[str, torch.Tensor]]:
        """A receiver: (name, tensor) pairs as they arrive, each received only when the previous one was taken."""
        for name, dtype, shape in specs:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self._broadcast(tensor)
            yield name, tensor


def specs(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, str, list[int]]]:
    """What `receive` needs to know of each tensor `send` will send."""
    return [(name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)) for name, tensor in named]
