"""The online RL loop's update guard: a NaN/inf gradient stops the run before the optimizer touches the weights."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhfx.errors import RlhfxError
from rlhfx.training.rl_trainer import OnlineRLTrainer


def trainer_with(model, tmp_path):
    trainer = OnlineRLTrainer.__new__(OnlineRLTrainer)  # only what _optimizer_step reads
    trainer.args, trainer.step, trainer.output_dir = SimpleNamespace(max_grad_norm=1.0), 3, Path(tmp_path)
    trainer.optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    return trainer


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_stops_before_the_update(tmp_path, bad):
    model = torch.nn.Linear(2, 2)
    trainer, before = trainer_with(model, tmp_path), [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[1.0, bad]])).sum().backward()
    with pytest.raises(RlhfxError, match=r"gradients became NaN/inf .* at step 4"):
        trainer._optimizer_step(model, trainer.optimizer, trainer.scheduler)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_finite_gradient_updates(tmp_path):
    model = torch.nn.Linear(2, 2)
    trainer, before = trainer_with(model, tmp_path), model.weight.detach().clone()
    model(torch.tensor([[1.0, 2.0]])).sum().backward()
    trainer._optimizer_step(model, trainer.optimizer, trainer.scheduler)
    assert not torch.equal(model.weight, before) and model.weight.grad is None
