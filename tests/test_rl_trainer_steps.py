"""The online RL loop's update step without a model: the guard (a NaN/inf gradient stops the run before the optimizer
touches the weights) and the loss flags reaching rl_math exactly as the formulas in docs/algorithms/ppo.md say."""

import math

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


def micro_stepper(**config):
    """A trainer whose policy's log-probs are the leaf tensor it returns: _micro_step's gradient on it is the loss's."""
    from rlhfx.algos.ppo import RLConfig

    fields = dict(advantage_estimator="group_norm", n_samples_per_prompt=2, kl_coef=0.0, kl_estimator="k3",
                  use_kl_loss=False, target_kl=None, kl_horizon=10000, rollout_batch_size=1, micro_rollout_batch_size=2,
                  num_ppo_epochs=1, generate_max_len=3, temperature=1.0, top_p=1.0, cliprange=0.2, cliprange_high=0.2,
                  policy_loss="ppo", loss_agg_mode="token-mean", dual_clip=None, cliprange_value=None, vf_coef=0.1,
                  gamma=1.0, lam=1.0, whiten_rewards=False, normalize_reward=False, reward_clip_range=None,
                  entropy_coef=0.0)
    trainer = OnlineRLTrainer.__new__(OnlineRLTrainer)
    trainer.config, trainer.critic = RLConfig(**{**fields, **config}), None
    trainer.kl = SimpleNamespace(value=0.0)
    logp = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]], requires_grad=True)
    trainer._logp = lambda model, micro: (logp, torch.zeros(2, 3, 4))
    trainer.model = None
    micro = {"mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), "old_logp": torch.zeros(2, 3),
             "ref_logp": torch.zeros(2, 3), "advantages": torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])}
    return trainer, logp, micro


def step_gradient(**config):
    trainer, logp, micro = micro_stepper(**config)
    stats = trainer._micro_step(micro, 1, {"n_tokens": micro["mask"].sum(), "n_sequences": torch.tensor(2.0)})
    return logp.grad, stats


def test_the_trainer_passes_the_policy_loss_flags_to_the_loss():
    s0, s1 = math.exp(0.2), math.exp(-0.4)
    grad, _ = step_gradient(policy_loss="gspo", loss_agg_mode="seq-mean-token-mean", cliprange=0.5, cliprange_high=0.5)
    assert torch.allclose(grad, torch.tensor([[-s0 / 6] * 3, [s1 / 4, s1 / 4, 0.0]]), atol=1e-6)  # one ratio per row
    grad, _ = step_gradient(loss_agg_mode="seq-mean-token-sum", cliprange=0.5, cliprange_high=0.5)
    token = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]]).exp()
    expected = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 0.0]]) * token / 2  # d(-rho A)/d logp, summed, / 2 rows
    assert torch.allclose(grad, expected, atol=1e-6)
    # rho = e^0.3 = 1.35 is clipped at 1.2 (no gradient) but not at 1.4 (--cliprange_high 0.4)
    assert step_gradient()[0][0, 2] == 0 and step_gradient(cliprange_high=0.4)[0][0, 2] != 0
