"""ALRIGHT / MAXRIGHT / mix (rlhfx/algos/xright.py): the per-step decision, the losses, the data cycling."""

import copy
import json
import math

import pytest
import torch

from rlhfx.algos.xright import (
    OBJECTIVE_KEY,
    AlrightSampler,
    MaxrightScheduler,
    alright_choice,
    check_ranks_chose_alike,
)
from rlhfx.errors import RlhfxError
from rlhfx.training.sft_batches import CyclingBatches
from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template

BETA = 0.1
LOSS = {"beta": BETA, "loss_type": "sigmoid", "label_smoothing": 0.0, "rpo_alpha": 0.0}

# ---------------------------------------------------------------------------------------------
# ALRIGHT


@pytest.mark.parametrize("lambd", [0.1, 0.3, 0.5, 0.8])
def test_alright_dpo_share_matches_lambd(lambd):
    sampler = AlrightSampler(lambd, seed=42)
    choices = [sampler.choose() for _ in range(2000)]
    assert abs(choices.count("dpo") / 2000 - lambd) < 0.03


def test_alright_stream_is_the_same_for_the_same_seed_and_bounds_are_exact():
    a, b = AlrightSampler(0.5, seed=7), AlrightSampler(0.5, seed=7)
    assert [a.choose() for _ in range(200)] == [b.choose() for _ in range(200)]
    assert alright_choice(0.3, 0.3) == "sft" and alright_choice(0.2999, 0.3) == "dpo"
    assert {AlrightSampler(0.0, 1).choose() for _ in range(100)} == {"sft"}
    assert {AlrightSampler(1.0, 1).choose() for _ in range(100)} == {"dpo"}


def test_ranks_that_disagree_stop_the_run():
    check_ranks_chose_alike([1, 1], step=3)
    with pytest.raises(RlhfxError, match="step 3"):
        check_ranks_chose_alike([1, 0], step=3)


# ---------------------------------------------------------------------------------------------
# MAXRIGHT with scripted losses


def test_maxright_picks_the_larger_weighted_gap_ties_to_sft():
    s = MaxrightScheduler(lambd=0.5)
    s.refresh(1.0, 1.0)
    assert s.choose() == "sft"  # tie
    s = MaxrightScheduler(lambd=0.8)  # raw SFT loss is larger, but DPO weighs 4x: 0.2*2.0=0.4 < 0.8*0.6=0.48
    s.refresh(2.0, 0.6)
    assert s.gaps == pytest.approx({"sft": 0.4, "dpo": 0.48}) and s.choose() == "dpo"
    s = MaxrightScheduler(lambd=0.5, sft_opt=1.5, dpo_opt=0.1)  # gaps are measured from the optima
    s.refresh(2.0, 0.8)
    assert s.gaps == pytest.approx({"sft": 0.25, "dpo": 0.35}) and s.choose() == "dpo"
    s.update("dpo", 0.5)  # only the trained objective's gap moves
    assert s.gaps == pytest.approx({"sft": 0.25, "dpo": 0.2}) and s.choose() == "sft"
    with pytest.raises(RuntimeError):
        MaxrightScheduler(0.5).choose()


def test_maxright_refreshes_every_max_eval_steps_and_trains_the_larger_gap():
    """A scripted run: evaluation reports the true losses, training lowers the trained objective's loss."""
    lambd, sft_opt, dpo_opt = 0.25, 1.0, 0.0
    true = {"sft": 3.0, "dpo": 0.7}
    s = MaxrightScheduler(lambd, sft_opt, dpo_opt, max_eval_steps=4)
    stale, evaluated, chosen = {}, [], []
    for step in range(12):
        def evaluate(step=step):
            evaluated.append(step)
            return true["sft"], true["dpo"]

        objective, refreshed = s.begin(step, evaluate)
        if step % 4 == 0:
            stale = dict(true)  # both gaps refreshed from evaluation
        gaps = {"sft": (1 - lambd) * (stale["sft"] - sft_opt), "dpo": lambd * (stale["dpo"] - dpo_opt)}
        assert refreshed == (step % 4 == 0)
        assert objective == ("sft" if gaps["sft"] >= gaps["dpo"] else "dpo"), step
        chosen.append(objective)
        s.update(objective, true[objective])  # the loss measured by the training forward, before the update
        stale[objective] = true[objective]
        true[objective] *= 0.7 if objective == "sft" else 0.9
    assert evaluated == [0, 4, 8]
    assert chosen[:3] == ["sft"] * 3 and "dpo" in chosen  # SFT first (gap 1.5 vs 0.175), then both


# ---------------------------------------------------------------------------------------------
# Data cycling


def test_cycling_batches_restart_with_their_own_epochs_and_shard_ranks():
    rows = list(range(10))
    ranks = [CyclingBatches(rows, 2, list, seed=3, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == 3  # 10 rows / global batch 4, the last one wraps around
    epoch0 = [x for _ in range(3) for it in ranks for x in next(it)]
    assert sorted(epoch0[:10]) == rows and epoch0[10:] == epoch0[:2]  # padded like DistributedSampler
    assert ranks[0].position() == {"epoch": 1, "batch": 0, "batches_per_epoch": 3, "drawn": 3}
    it = CyclingBatches(rows, 5, list, seed=3)
    first = it.peek()
    assert it.peek() is first and next(it) is first and it.drawn == 1  # peek does not consume
    assert sorted(first + next(it)) == rows and it.epoch == 1
    orders = [next(it) + next(it) for _ in range(3)]  # epochs 1..3, each its own permutation
    assert all(sorted(o) == rows for o in orders) and len({tuple(o) for o in orders}) > 1


# ---------------------------------------------------------------------------------------------
# The trainer on the tiny model


def demo_rows(kind: str, n: int) -> list[dict]:
    lines = (DATA_DIR / f"demo_{kind}_train.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    sft = [encoder.encode_sft(r["messages"]) for r in demo_rows("sft", 12)]
    pref = []
    for row in demo_rows("pref", 20):
        prompt = [{"role": "user", "content": row["prompt"]}]
        pref.append({"prompt_ids": encoder.encode_prompt(prompt), "chosen_ids": encoder.encode_completion(prompt, row["chosen"]),
                     "rejected_ids": encoder.encode_completion(prompt, row["rejected"])})
    return {"path": path, "tokenizer": tokenizer, "sft": sft, "pref": pref,
            "model": AutoModelForCausalLM.from_pretrained(path)}


def make_trainer(tiny, tmp_path, mode, n_sft, n_pref, perturb=0.0, **options):
    from datasets import Dataset
    from trl import DPOConfig

    from rlhfx.algos.xright import XrightTrainer

    ref = copy.deepcopy(tiny["model"])
    policy = copy.deepcopy(ref)
    if perturb:
        torch.manual_seed(1)
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(perturb * torch.randn_like(p))
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], beta=BETA, bf16=False, seed=5,
                       per_device_train_batch_size=2, max_steps=options.pop("max_steps", 1), learning_rate=1e-4,
                       logging_steps=1, save_strategy="no", disable_tqdm=True, precompute_ref_log_probs=False)
    return XrightTrainer(model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(tiny["pref"][:n_pref]),
                         processing_class=tiny["tokenizer"], loss_kwargs=LOSS, mode=mode,
                         sft_train_dataset=Dataset.from_list(tiny["sft"][:n_sft]), **options)


def token_logps(model, input_ids):
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def test_mix_loss_is_the_weighted_sum_of_independently_computed_sft_and_dpo_losses(tiny, tmp_path):
    lambd = 0.3
    trainer = make_trainer(tiny, tmp_path, "mix", 4, 4, perturb=0.05, lambd=lambd)
    sft_batch = trainer.sft_collate(tiny["sft"][:4])
    pref_batch = trainer.data_collator(tiny["pref"][:4])
    model = trainer.model.train()
    mix = trainer.compute_loss(model, {OBJECTIVE_KEY: "mix", "sft": sft_batch, "dpo": pref_batch}).item()
    sft_only = trainer.compute_loss(model, {OBJECTIVE_KEY: "sft", "sft": sft_batch}).item()
    dpo_only = trainer.compute_loss(model, {OBJECTIVE_KEY: "dpo", "dpo": pref_batch}).item()

    # SFT: token-mean NLL over the assistant tokens only, from a plain forward pass
    nll, count = 0.0, 0
    for row in tiny["sft"][:4]:
        ids = torch.tensor([row["input_ids"]])
        logps = token_logps(trainer.model, ids)[0]
        mask = torch.tensor(row["assistant_masks"][1:], dtype=torch.bool)
        nll, count = nll - logps[mask].sum().item(), count + int(mask.sum())
    expected_sft = nll / count
    # DPO: -log sigmoid(beta * z) on summed response log-probs of policy and reference
    expected_dpo = 0.0
    for row in tiny["pref"][:4]:
        z = 0.0
        for key, sign in (("chosen_ids", 1), ("rejected_ids", -1)):
            ids = torch.tensor([row["prompt_ids"] + row[key]])
            n = len(row[key])
            z += sign * (token_logps(trainer.model, ids)[0, -n:].sum() - token_logps(trainer.ref_model, ids)[0, -n:].sum()).item()
        expected_dpo += -math.log(1 / (1 + math.exp(-BETA * z))) / 4
    assert sft_only == pytest.approx(expected_sft, rel=1e-4)
    assert dpo_only == pytest.approx(expected_dpo, rel=1e-4)
    assert mix == pytest.approx((1 - lambd) * expected_sft + lambd * expected_dpo, rel=1e-4)
    assert abs(expected_dpo - math.log(2)) > 1e-3  # the perturbation makes z != 0


@pytest.mark.parametrize("mode", ["mix", "alright", "maxright"])
def test_data_sets_cycle_independently_through_training(tiny, tmp_path, mode, monkeypatch):
    """SFT set of 3 batches and preference set of 5 batches (batch 2), 20 optimizer steps."""
    # sft_opt brings the SFT gap of the barely trained tiny model near the DPO one, so MAXRIGHT alternates
    trainer = make_trainer(tiny, tmp_path, mode, 6, 10, max_steps=20, lambd=0.5, max_eval_steps=4, sft_opt=5.4)
    drawn = {"sft": [], "dpo": []}
    original = CyclingBatches.__next__

    def spy(self):
        drawn["sft" if self is trainer.sft_batches else "dpo"].append((self.epoch, self.indices()))
        return original(self)

    monkeypatch.setattr(CyclingBatches, "__next__", spy)
    trainer.train()
    record = json.loads((tmp_path / "objectives.json").read_text())
    objectives = record["objectives"]
    assert len(objectives) == 20 and trainer.state.global_step == 20
    n_sft = 20 if mode == "mix" else objectives.count(0)
    n_dpo = 20 if mode == "mix" else objectives.count(1)
    assert len(drawn["sft"]) == n_sft and len(drawn["dpo"]) == n_dpo  # only the trained objective's batch is drawn
    assert record["data"]["sft"] == {"epoch": n_sft // 3, "batch": n_sft % 3, "batches_per_epoch": 3, "drawn": n_sft}
    assert record["data"]["pref"] == {"epoch": n_dpo // 5, "batch": n_dpo % 5, "batches_per_epoch": 5, "drawn": n_dpo}
    for kind, per_epoch, size in (("sft", 3, 6), ("dpo", 5, 10)):
        epochs = {}
        for epoch, indices in drawn[kind]:
            epochs.setdefault(epoch, []).extend(indices)
        for epoch, indices in epochs.items():  # every complete epoch visits every row exactly once
            if len(indices) == 2 * per_epoch:
                assert sorted(indices) == list(range(size)), (kind, epoch)
    if mode == "mix":
        assert objectives == [None] * 20
    else:
        assert 0 < objectives.count(1) < 20
    if mode == "maxright":
        refreshed = [h for h in trainer.state.log_history if "refreshed" in h]
        assert [h["step"] for h in refreshed if h["refreshed"] == 1.0] == [1, 5, 9, 13, 17]  # steps 0, 4, 8, ... (1-based log)
