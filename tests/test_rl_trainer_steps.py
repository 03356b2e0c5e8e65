"""The online RL loop's update step without a model: the guard (a NaN/inf gradient stops the run before the optimizer
touches the weights) and the loss flags reaching rl_math exactly as the formulas in docs/algorithms/ppo.md say."""

import math

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhfx.algos.rl.dist import Ranks
from rlhfx.algos.rl.rollout import RolloutStage
from rlhfx.algos.rl.update import UpdateStage
from rlhfx.errors import RlhfxError


def trainer_with(model, tmp_path):
    from accelerate import Accelerator

    trainer = UpdateStage.__new__(UpdateStage)  # only what optimizer_step reads
    trainer.args, trainer.output_dir = SimpleNamespace(max_grad_norm=1.0), Path(tmp_path)
    trainer.accelerator, trainer.models = Accelerator(cpu=True), [model]
    trainer.optimizers = [torch.optim.AdamW(model.parameters(), lr=0.1)]
    trainer.schedulers = [torch.optim.lr_scheduler.LambdaLR(trainer.optimizers[0], lambda _: 1.0)]
    trainer.scheduler = trainer.schedulers[0]
    return trainer


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_stops_before_the_update(tmp_path, bad):
    model = torch.nn.Linear(2, 2)
    trainer, before = trainer_with(model, tmp_path), [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[1.0, bad]])).sum().backward()
    with pytest.raises(RlhfxError, match=r"gradients became NaN/inf .* at step 4"):
        trainer.optimizer_step(3)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_finite_gradient_updates(tmp_path):
    model = torch.nn.Linear(2, 2)
    trainer, before = trainer_with(model, tmp_path), model.weight.detach().clone()
    model(torch.tensor([[1.0, 2.0]])).sum().backward()
    trainer.optimizer_step(3)
    assert not torch.equal(model.weight, before) and model.weight.grad is None


def micro_stepper(**config):
    """An update stage whose policy's log-probs are the leaf tensor it returns: the loss's gradient on it is checked."""
    from rlhfx.algos.options import RLOptions

    fields = dict(advantage_estimator="group_norm", n_samples_per_prompt=2, kl_coef=0.0, kl_estimator="k3",
                  use_kl_loss=False, target_kl=None, kl_horizon=10000, rollout_batch_size=1, micro_rollout_batch_size=2,
                  num_ppo_epochs=1, generate_max_len=3, temperature=1.0, top_p=1.0, cliprange=0.2, cliprange_high=0.2,
                  policy_loss="ppo", loss_agg_mode="token-mean", dual_clip=None, dynamic_sampling=False,
                  max_resample_times=3, overlong_buffer_len=None, overlong_penalty_factor=1.0, overlong_filter=False,
                  enable_vllm_is_correction=False, vllm_is_correction_type="tis", vllm_is_truncated_threshold=[0.5, 5.0],
                  kl_unbiased_gradient=False, cliprange_value=None, vf_coef=0.1,
                  gamma=1.0, lam=1.0, whiten_rewards=False, scale_rewards="group", normalize_reward=False, reward_clip_range=None,
                  entropy_coef=0.0)
    trainer = UpdateStage.__new__(UpdateStage)
    trainer.config = RLOptions(**{**fields, **config})
    trainer.kl, trainer.chord = SimpleNamespace(value=0.0), None
    logp = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]], requires_grad=True)
    trainer.policy, trainer.critic = "policy", None  # the policy's loss alone
    trainer.forward = lambda micro: (logp, torch.zeros(2, 3, 4))
    micro = {"mask": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), "old_logp": torch.zeros(2, 3),
             "ref_logp": torch.zeros(2, 3), "advantages": torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])}
    return trainer, logp, micro


def step_gradient(**config):
    trainer, logp, micro = micro_stepper(**config)
    losses, stats = trainer.loss(micro, {"n_tokens": micro["mask"].sum(), "n_sequences": torch.tensor(2.0)})
    losses[0].backward()  # the policy's
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
    # --loss_type sapo: no clip; the gate's slope 4 s (1 - s), s = sigmoid(tau_pos (rho - 1)), times d rho = rho, / 5
    rho = math.exp(0.3)
    s = 1 / (1 + math.exp(-(rho - 1)))
    assert abs(step_gradient(loss_type="sapo", tau_pos=1.0)[0][0, 2] + 4 * s * (1 - s) * rho / 5) < 1e-6


class FakeEngine:
    """Completions of a fixed length per prompt; `finished` False means cut at the length limit."""

    stop_ids = [0]

    def __init__(self, outcomes):
        self.outcomes, self.calls = outcomes, 0  # per call: per prompt, n (text, length, finished)

    def generate(self, prompts, sampling):
        from rlhfx.engines import Completion

        out = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        return [[Completion(text, [5] * length, finished) for text, length, finished in group] for group in out[: len(prompts)]]


def rollout_trainer(outcomes, **config):
    """A rollout stage on a fake engine and rule reward, whose models' log-probs are all 0."""
    update, _, _ = micro_stepper(advantage_estimator="rloo", reward_clip_range=10.0, generate_max_len=8, **config)
    stage = RolloutStage.__new__(RolloutStage)
    stage.config, stage.engine, stage.sampling, stage.ranks = update.config, FakeEngine(outcomes), None, Ranks()
    stage.args = SimpleNamespace(engine="pt", seed=1, packing_samples=False)
    stage.pad_id, stage.critic, stage.completions_path, stage.policy, stage.multi_turn = 0, None, None, None, None
    stage.train_rows = [{"prompt_ids": [1, 2], "prompt_messages": "[]", "prompt_text": f"p{i}"} for i in range(4)]
    stage.rewards = lambda samples: [float(s.response == "right") for s in samples]
    stage.autocast = stage.offload = lambda: torch.autocast("cpu", enabled=False)
    stage.forward_passes = lambda batch: (torch.zeros_like(batch["mask"]), torch.zeros_like(batch["mask"]), None)
    stage.kl = SimpleNamespace(value=0.0, update=lambda kl, n: None)
    return stage


def rollout(stage, rows):
    groups, stats = stage.groups(rows, 0, stage.train_rows)
    batch, more = stage.experience(groups, 0)
    return batch, {**stats, **more}


SAME, MIXED = [("wrong", 3, True)] * 2, [("right", 3, True), ("wrong", 3, True)]


def test_dynamic_sampling_keeps_varied_groups_and_tops_the_batch_up():
    # round 0: prompt 0 all wrong (dropped), prompt 1 mixed; round 1: two more mixed groups, one needed
    trainer = rollout_trainer([[SAME, MIXED], [MIXED, MIXED]], dynamic_sampling=True, max_resample_times=3)
    groups, stats = trainer.groups(trainer.train_rows[:2], 0, trainer.train_rows)
    assert len(groups) == 2 and all({s[4] for s in group} == {0.0, 1.0} for group in groups)
    assert (stats["varied_groups"], stats["sampling_rounds"], stats["reward"]) == (0.5, 1, 0.25)
    # capped: no round finds a varied group, so after --max_resample_times rounds the one kept group trains alone
    trainer = rollout_trainer([[SAME, MIXED], [SAME, SAME]], dynamic_sampling=True, max_resample_times=2)
    groups, stats = trainer.groups(trainer.train_rows[:2], 0, trainer.train_rows)
    assert len(groups) == 1 and stats["sampling_rounds"] == 2 and trainer.engine.calls == 3
    # off: everything is kept
    trainer = rollout_trainer([[SAME, MIXED]])
    assert len(trainer.groups(trainer.train_rows[:2], 0, trainer.train_rows)[0]) == 2


def test_overlong_shaping_and_filter_in_the_rollout():
    # prompt 0: "right" cut at 8 tokens vs "wrong" of 3; buffer 4, factor 1: the cut one gets 1 - 1 = 0
    outcomes = [[[("right", 8, False), ("wrong", 3, True)], [("right", 7, True), ("wrong", 3, True)]]]
    trainer = rollout_trainer(outcomes, overlong_buffer_len=4, overlong_filter=True)
    batch, stats = rollout(trainer, trainer.train_rows[:2])
    # shaped rewards 0, 0 | 1 - 3/4, 0 -> rloo advantages 0, 0 | .25, -.25 on every real token
    assert torch.allclose(batch["advantages"][:, 0], torch.tensor([0.0, 0.0, 0.25, -0.25]))
    assert stats["overlong_penalty"] == pytest.approx(-(1 + 0.75) / 4) and stats["truncated"] == 0.25
    assert batch["mask"].sum(1).tolist() == [0.0, 3.0, 7.0, 3.0]  # the cut completion is out of the loss


def test_vllm_log_probs_become_the_rollout_correction_weights():
    from rlhfx.engines import Completion

    class LogprobEngine(FakeEngine):
        def generate(self, prompts, sampling):  # vLLM's log-probs: pi_old / pi_vllm = e^.5 (kept), e^3 (beyond 5)
            return [[Completion("right", [5, 5], True, [-0.5, -3.0]), Completion("wrong", [5, 5], True, [0.0, 0.0])]]

        def update_weights(self, weights):
            pass

        def sleep(self):
            pass

        def wake_up(self):
            pass

    trainer = rollout_trainer([], enable_vllm_is_correction=True, vllm_is_correction_type="icepop")
    trainer.engine, trainer.args.engine, trainer.policy_weights = LogprobEngine([]), "vllm", lambda: []
    batch, stats = rollout(trainer, trainer.train_rows[:1])
    assert torch.allclose(batch["is_weights"], torch.tensor([[math.exp(0.5), 0.0], [1.0, 1.0]]))
    assert stats["is_masked"] == pytest.approx(0.25)
    # the update weighs each token's loss by them: the dropped token gets no gradient
    trainer2, logp, micro = micro_stepper(cliprange=0.5, cliprange_high=0.5)  # nothing clipped
    micro["is_weights"] = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    trainer2.loss(micro, {"n_tokens": torch.tensor(5.0), "n_sequences": torch.tensor(2.0)})[0][0].backward()
    rho = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]]).exp()  # d(-w rho A)/d logp = -w rho A, / 5 tokens
    assert torch.allclose(logp.grad, torch.tensor([[-rho[0, 0], 0.0, -2 * rho[0, 2]], [rho[1, 0], rho[1, 1], 0.0]]) / 5)


def test_the_trainer_takes_the_unbiased_kl_gradient_when_asked():
    def kl_grad(unbiased):
        trainer, logp, micro = micro_stepper(use_kl_loss=True, kl_estimator="k3", kl_unbiased_gradient=unbiased)
        trainer.kl.value, micro["advantages"] = 1.0, torch.zeros(2, 3)
        micro["ref_logp"] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        trainer.loss(micro, {"n_tokens": torch.tensor(5.0), "n_sequences": torch.tensor(2.0)})[0][0].backward()
        return logp.grad

    lr, w = torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]]), torch.tensor([[0.1, 0.2, 0.3], [-0.5, -0.3, 0.0]]).exp()
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert torch.allclose(kl_grad(True), w * lr * mask / 5, atol=1e-6)  # w lr, token mean over 5 tokens
    assert torch.allclose(kl_grad(False), (1 - torch.exp(-lr)) * mask / 5, atol=1e-6)  # k3's own: 1 - e^-lr
