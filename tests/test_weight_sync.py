"""The weight-sync group (rlhfx.engines.weight_sync): rank 0 broadcasts tensors one by one over a gloo group of its
own, and each receiver gets them under their names, dtypes and shapes. The ranks are threads of this process (each
group object is independent of the others and of any default group); a few tenths of a second."""

import socket
import threading

import torch

from rlhfx.engines.weight_sync import WeightGroup, specs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_0_broadcasts_each_tensor_to_every_receiver():
    torch.manual_seed(0)
    sent = [("embed_tokens.weight", torch.randn(5, 3)), ("layers.0.norm.weight", torch.randn(3).bfloat16()),
            ("lm_head.bias", torch.arange(4, dtype=torch.int64).reshape(2, 2))]
    port, world, got, errors = _free_port(), 3, {}, []

    def rank(r):
        try:
            group = WeightGroup("127.0.0.1", port, r, world, "gloo")
            if r == 0:
                group.send(sent)
            else:
                got[r] = [(name, tensor.clone()) for name, tensor in group.receive(specs(sent))]
        except Exception as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(got) == [1, 2]
    for pairs in got.values():
        assert [name for name, _ in pairs] == [name for name, _ in sent]
        for (_, mine), (_, theirs) in zip(pairs, sent):
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape and torch.equal(mine, theirs)
