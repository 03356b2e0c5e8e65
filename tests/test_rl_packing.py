"""--packing_samples (ms-swift's --padding_free) for online RL: the policy, reference and critic forwards run on one
row of the batch's real tokens (positions restarting per sequence, no attention mask) and give what each sequence
gives alone, so the log-probs, values, loss and update are the padded batch's (rlhfx.algos.rl.batch)."""

import json
from contextlib import contextmanager

import pytest
import torch
from cli_inprocess import run_cli  # noqa: F401 (fixture)
from test_rl_flag_wiring import PROMPTS, RESPONSES, Stages, World, rows

import rlhfx.algos.rl.batch as batch_module

REAL_TOKENS = sum(len(p) + len(r) for p, rs in zip(PROMPTS, RESPONSES) for r in rs)


@pytest.fixture(scope="module")
def world():
    return World()


@contextmanager
def shapes_seen(monkeypatch):
    """The input_ids shape and attention mask of every forward the RL code runs (through `response_span`)."""
    seen, span = [], batch_module.response_span

    def spy(forward, *args):
        def recorded(**kw):
            seen.append((tuple(kw["input_ids"].shape), kw["attention_mask"]))
            return forward(**kw)
        return span(recorded, *args)

    monkeypatch.setattr(batch_module, "response_span", spy)
    yield seen
    monkeypatch.undo()


def biggest(*tensors) -> float:
    return max((a - b).abs().max().item() for a, b in tensors)


def test_packed_forwards_give_each_sequence_its_own_log_probs_and_values(world, monkeypatch):
    """The 8 samples (prompts of 3 and 2 tokens left padded, responses of 1-5 tokens right padded) in one (1, 41)
    row: each token's log-prob under the policy and the reference, and its value, as its sequence alone gives them.
    Measured max |diff| 5e-7 (log-probs), 3e-7 (values); a packed row whose positions do not restart per sequence
    lets the sequences attend to each other (0.65 off)."""
    stages = Stages(world, "ppo", "--packing_samples")
    with shapes_seen(monkeypatch) as seen:
        batch = stages.batch()
    assert seen == [((1, REAL_TOKENS), None)] * 3  # policy, reference, critic
    assert biggest(*zip(rows(batch["old_logp"]), world.logp(world.policy))) < 1e-5
    assert biggest(*zip(rows(batch["ref_logp"]), world.logp(world.ref))) < 1e-5
    assert biggest(*zip(rows(batch["values"]), world.values())) < 1e-5


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_a_packed_update_step_is_the_padded_one(world, monkeypatch, name):
    """One optimizer step (2 micro batches of 4) on the same rollout: the same losses and the same weights after it."""
    runs = []
    for argv in ([], ["--packing_samples"]):
        stages = Stages(world, name, "--batch_size", "4", *argv)
        with shapes_seen(monkeypatch) as seen:
            batch = stages.batch()
            torch.manual_seed(0)
            stats = stages.update.update(batch, 8, 0)
        runs.append((stats, [p.detach() for p in stages.update.policy.parameters()], seen))
    (padded, before, seen_padded), (packed, after, seen_packed) = runs
    moved, apart = biggest(*zip(before, world.policy.parameters())), biggest(*zip(after, before))
    assert {shape[0] for shape, _ in seen_padded} == {8, 4}
    assert {shape[0] for shape, _ in seen_packed} == {1} and {mask for _, mask in seen_packed} == {None}
    for key in ("policy_loss", "value_loss") if name == "ppo" else ("policy_loss",):
        assert packed[key] == pytest.approx(padded[key], abs=1e-5), key
        print(f"{name} {key}: padded {padded[key]:.8f} packed {packed[key]:.8f}")
    print(f"{name}: the step moved the weights up to {moved:.1e}; packed - padded after it: {apart:.1e}")
    assert apart < 0.05 * moved


def test_padding_free_true_packs_a_grpo_run(run_cli, monkeypatch, tmp_path):  # noqa: F811
    """ms-swift's spelling is taken by `rlhfx rlhf --rlhf_type grpo`, and every forward of the run sees one row."""
    with shapes_seen(monkeypatch) as seen:
        code, out = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#4",
                            "--reward_funcs", "demo", "--train_type", "full", "--max_steps", "1", "--num_generations",
                            "2", "--rollout_batch_size", "2", "--generate_max_len", "4", "--padding_free", "true",
                            "--output_dir", tmp_path, "--save_steps", "-1", "--logging_steps", "1")
    assert code == 0, out
    assert seen and all(shape[0] == 1 and mask is None for shape, mask in seen), seen
    assert any("policy_loss" in json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
