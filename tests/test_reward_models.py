"""Reward models: `rm_loss` and `prm_loss` against the formulas by hand, and the trainers' real losses
against the formulas on scores computed here independently (plain forward passes, positions found here)."""

import json
import math

import pytest
import torch

from rlhfx.algos.losses import prm_loss, rm_loss, step_accuracy
from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_rm_loss_matches_formula_with_and_without_margin():
    chosen, rejected, margin = [1.5, -0.2, 0.3, 2.0], [0.5, 0.4, 0.3, -1.0], [0.0, 1.0, -0.5, 2.5]
    got = rm_loss(torch.tensor(chosen), torch.tensor(rejected), torch.tensor(margin))
    expected = [-log_sigmoid(c - r - m) for c, r, m in zip(chosen, rejected, margin)]
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    got = rm_loss(torch.tensor(chosen), torch.tensor(rejected))
    assert got.tolist() == pytest.approx([-log_sigmoid(c - r) for c, r in zip(chosen, rejected)], abs=1e-5)


def test_prm_loss_matches_cross_entropy_over_two_reward_tokens():
    logits = [[2.0, -1.0], [0.3, 0.9], [-0.5, -0.5], [1.2, 3.0]]
    labels = [1.0, 0.0, 0.3, 0.75]  # hard and soft labels
    losses, good = prm_loss(torch.tensor(logits), torch.tensor(labels))
    expected, expected_good = [], []
    for (a, b), p in zip(logits, labels):
        log_qa = a - math.log(math.exp(a) + math.exp(b))
        log_qb = b - math.log(math.exp(a) + math.exp(b))
        expected.append(-(p * log_qa + (1 - p) * log_qb))
        expected_good.append(math.exp(log_qa))
    assert losses.tolist() == pytest.approx(expected, abs=1e-5)
    assert good.tolist() == pytest.approx(expected_good, abs=1e-6)
    # predicted good = P(good) > 0.5: right, right, right (a tie counts as bad, label 0.3), wrong
    assert step_accuracy(good, torch.tensor(labels)).item() == pytest.approx(3 / 4)


def test_prm_loss_binary_head_is_soft_binary_cross_entropy():
    scores, labels = [1.3, -0.7, 0.0, 4.0], [1.0, 0.0, 0.6, 0.2]
    losses, good = prm_loss(torch.tensor(scores), torch.tensor(labels))
    expected = [-(p * log_sigmoid(s) + (1 - p) * log_sigmoid(-s)) for s, p in zip(scores, labels)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-5)
    assert good.tolist() == pytest.approx([1 / (1 + math.exp(-s)) for s in scores], abs=1e-6)


def demo_rows(name: str, n: int) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / f"{name}_train.jsonl").read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path())


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return ChatEncoder(tokenizer, get_template("chatml"))


def test_rm_trainer_loss_equals_formula_on_independent_rewards(tmp_path, tokenizer, encoder):
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig

    from rlhfx.algos.rm import RlhfxRewardTrainer
    from rlhfx.rewards.score import score_pairs

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path(), num_labels=1)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # rewards of order one, so the loss is sensitive
    margins = [0.5, 0.0, 1.2, -0.3]
    encoded = []
    for row, margin in zip(demo_rows("demo_pref", 4), margins):
        prompt = [{"role": "user", "content": row["prompt"]}]
        encoded.append({"prompt_ids": encoder.encode_prompt(prompt),
                        "chosen_ids": encoder.encode_completion(prompt, row["chosen"]),
                        "rejected_ids": encoder.encode_completion(prompt, row["rejected"]), "margin": margin})
    from datasets import Dataset

    config = RewardConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False,
                          per_device_train_batch_size=4)
    trainer = RlhfxRewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(encoded),
                                 processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert (batch["attention_mask"] == 0).any(), "the batch must be right padded somewhere"
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch).item()

    # Independently: the body's last hidden state at the last non-pad token, times the score head.
    ids, mask = batch["input_ids"], batch["attention_mask"]
    last = mask.sum(1) - 1
    assert all(mask[i, last[i] + 1:].sum() == 0 for i in range(len(ids)))
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        rewards = (hidden[torch.arange(len(ids)), last] @ model.score.weight.T).squeeze(-1).tolist()
    n = len(encoded)
    expected = [-log_sigmoid(rewards[i] - rewards[n + i] - margins[i]) for i in range(n)]
    assert loss == pytest.approx(sum(expected) / n, abs=1e-5)
    # The scoring function used for evaluation and downstream gives the same rewards, pair by pair.
    scores = score_pairs(model, tokenizer.pad_token_id, encoded, batch_size=3)
    assert [s for pair in scores for s in pair] == pytest.approx(
        [v for i in range(n) for v in (rewards[i], rewards[n + i])], abs=1e-4)


def test_pad_token_equal_to_eos_is_replaced_by_an_existing_token_else_a_new_one(tokenizer, monkeypatch):
    import copy

    from transformers import AutoModelForSequenceClassification

    from rlhfx.algos import rm

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path(), num_labels=1)
    vocab = model.get_input_embeddings().weight.shape[0]
    notes = []
    # the config's pad id, then the unk token, then a special token named for padding: no resize
    configured = copy.deepcopy(tokenizer)
    configured.pad_token, configured.unk_token = configured.eos_token, "<|endoftext|>"
    model.config.pad_token_id = configured.convert_tokens_to_ids("<|im_start|>")
    assert rm.ensure_pad_token(model, configured, notes.append) and configured.pad_token == "<|im_start|>"
    with_unk = copy.deepcopy(tokenizer)
    with_unk.pad_token, with_unk.unk_token = with_unk.eos_token, "<|endoftext|>"
    model.config.pad_token_id = with_unk.eos_token_id
    assert rm.ensure_pad_token(model, with_unk, notes.append) and with_unk.pad_token == "<|endoftext|>"
    named = copy.deepcopy(tokenizer)
    named.pad_token = named.eos_token
    model.config.pad_token_id = None
    assert rm.ensure_pad_token(model, named, notes.append) and named.pad_token == "<|pad|>"
    assert model.get_input_embeddings().weight.shape[0] == vocab and "resized" not in " ".join(notes)
    # neither: a new token, and the embeddings grow when the tokenizer outgrows them
    bare = copy.deepcopy(tokenizer)
    bare.pad_token = bare.eos_token
    monkeypatch.setattr(type(bare), "get_added_vocab", lambda self: {})
    monkeypatch.setattr(type(bare), "all_special_tokens", property(lambda self: [self.eos_token]))
    monkeypatch.setattr(rm, "PAD_TOKEN", "<|rm_pad|>")
    model.resize_token_embeddings(len(bare))
    model.config.pad_token_id = None
    assert rm.ensure_pad_token(model, bare, notes.append)
    assert bare.pad_token == "<|rm_pad|>" and bare.pad_token_id != bare.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(bare) and "resized" in notes[-1]
    assert model.config.pad_token_id == bare.pad_token_id
    assert not rm.ensure_pad_token(model, bare, notes.append)  # already distinct: nothing to do


def encode_process(rows, encoder):
    from rlhfx.training.encode import ENCODERS

    return [ENCODERS["process"]({**row, "prompt": [{"role": "user", "content": row["prompt"]}]}, encoder)[0]
            for row in rows]


@pytest.mark.parametrize("reward_tokens", [["+", "-"], None])
def test_prm_trainer_loss_equals_formula_at_placeholder_positions(tmp_path, tokenizer, encoder, reward_tokens):
    import copy

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainingArguments

    from rlhfx.algos import prm

    tok = copy.deepcopy(tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    placeholder_id = prm.add_placeholder(lm, tok, "<|step|>", lambda *_: None)
    assert tok.convert_tokens_to_ids("<|step|>") == placeholder_id == len(tok) - 1
    reward_ids = prm.reward_token_ids(reward_tokens, tok)
    torch.manual_seed(0)
    model = lm if reward_ids else prm.token_classifier(lm)
    if reward_ids is None:
        with torch.no_grad():
            model.score.weight.normal_(0, 1.0)
    rows = demo_rows("demo_prm", 4)
    soft = [0.3, 0.8, 1.0, 0.0, 0.55, 0.1, 0.9, 0.2, 0.4, 0.6, 0.7, 0.05]
    labels = []
    for row in rows:  # soft labels, to exercise the soft cross-entropy
        row["labels"] = [soft[len(labels) + i] for i in range(len(row["steps"]))]
        labels += row["labels"]
    encoded = encode_process(rows, encoder)
    collator = prm.ProcessCollator(tok.pad_token_id, placeholder_id)
    trainer = prm.RlhfxPRMTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                                            remove_unused_columns=False),
        data_collator=collator, train_dataset=Dataset.from_list(encoded), processing_class=tok,
        reward_token_ids=reward_ids)
    batch = collator(encoded)
    assert (batch["attention_mask"] == 0).any()
    model.eval()
    loss = trainer.compute_loss(model, batch).item()

    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (ids == placeholder_id).nonzero().tolist()  # row-major: the steps in order
    assert len(positions) == len(labels)
    expected = []
    with torch.no_grad():
        if reward_ids:
            logits = lm(input_ids=ids, attention_mask=mask).logits
        else:
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = hidden @ model.score.weight.T + model.score.bias
    for (row, col), p in zip(positions, labels):
        if reward_ids:
            a, b = logits[row, col, reward_ids[0]].item(), logits[row, col, reward_ids[1]].item()
            log_qa, log_qb = a - math.log(math.exp(a) + math.exp(b)), b - math.log(math.exp(a) + math.exp(b))
        else:
            s = logits[row, col, 0].item()
            log_qa, log_qb = log_sigmoid(s), log_sigmoid(-s)
        expected.append(-(p * log_qa + (1 - p) * log_qb))
    assert loss == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_process_rows_from_steps_or_trl_completions(tmp_path):
    from rlhfx.data.formats import normalise_rows
    from rlhfx.data.report import DropReport

    rows = [{"prompt": "Q?", "steps": ["a", "b"], "labels": ["+", "-"]},
            {"prompt": "Q?", "completions": ["a", "b"], "labels": [True, 0.25]},
            {"prompt": "Q?", "steps": ["a", "b"], "labels": [1]},
            {"prompt": "Q?", "steps": ["a", "b"], "labels": [2, 0]}]
    report = DropReport()
    out = normalise_rows(rows, "process", "d", report)
    assert out == [{"prompt": [{"role": "user", "content": "Q?"}], "steps": ["a", "b"], "labels": [1.0, 0.0]},
                   {"prompt": [{"role": "user", "content": "Q?"}], "steps": ["a", "b"], "labels": [1.0, 0.25]}]
    assert "steps/labels mismatch 1" in report.summary_lines()[0] and "wrong type 1" in report.summary_lines()[0]
