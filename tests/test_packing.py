"""--packing_samples computes the same loss on the same data as padded batches, on fewer tokens.

DPO: one collated batch of 8 pairs (perturbed policy, so the loss is not log 2), padded versus flattened
into one padding-free row. SFT: TRL's best-fit-decreasing packing of 32 conversations versus padding,
each as one evaluation batch (the mean over the same assistant tokens). Tolerance 1e-5 (float32).
"""

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from pairs import encoded_pairs

from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def rows(name: str, n: int) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_padding_free_dpo_loss_equals_padded(tiny, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig

    from rlhfx.algos.pairwise import PairwiseTrainer
    from rlhfx.training.packing import padding_free

    ref, tokenizer = tiny
    policy = copy.deepcopy(ref)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    encoded = encoded_pairs(tokenizer, 8)
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False, per_device_train_batch_size=8)
    losses = {}
    for packing in (False, True):
        trainer = PairwiseTrainer(model=copy.deepcopy(policy), ref_model=ref, args=config,
                                  train_dataset=Dataset.from_list(encoded), processing_class=tokenizer,
                                  loss_kwargs={"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0,
                                              "rpo_alpha": 0.0}, packing=packing)
        trainer.args.max_length = 64  # rows of 64 tokens: several sequences per row, several rows
        batch = trainer.data_collator(encoded)
        trainer.model.train()
        losses[packing] = trainer.compute_loss(trainer.model, batch).item()
    assert abs(losses[False] - 0.6931) > 1e-3
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    packed, _, segments = padding_free(batch["input_ids"], batch["attention_mask"], capacity=64)
    assert packed["input_ids"].size(0) > 1 and packed["input_ids"].size(1) <= 64  # several rows of <= 64 tokens
    assert (segments >= 0).sum() == batch["attention_mask"].sum()  # every real token once
    assert packed["input_ids"].numel() < batch["input_ids"].numel()  # demo rows differ little in length


def test_packed_sft_eval_loss_equals_padded_on_fewer_tokens(tiny, tmp_path):
    from rlhfx.algos import sft
    from rlhfx.training.encode import encode_rows

    model, tokenizer = tiny
    encoder = ChatEncoder(tokenizer, get_template("chatml"))

    class Report:
        def add(self, *a): raise AssertionError("no row should be dropped")
        def kept(self, *a): pass

    data = encode_rows("sft", rows("demo_sft_val.jsonl", 32), encoder, 512, Report(), "val")
    results = {}
    for packing in (False, True):
        args = SimpleNamespace(max_length=512, packing_samples=packing, aux_loss_coef=None)
        hf_args = dict(output_dir=str(tmp_path / str(packing)), use_cpu=True, report_to=[], bf16=False,
                       per_device_eval_batch_size=32, per_device_train_batch_size=32)
        ctx = SimpleNamespace(args=args, hf_args=hf_args, model=copy.deepcopy(model), train_dataset=data,
                              eval_dataset=data, tokenizer=tokenizer, peft_config=None, callbacks=[])
        trainer = sft.build_trainer(ctx)
        batches = list(trainer.get_eval_dataloader())
        assert len(batches) == 1
        results[packing] = (trainer.evaluate()["eval_loss"], batches[0]["input_ids"].numel(),
                            int((batches[0]["labels"] != -100).sum()))
        if packing:  # sdpa: separate packed rows, each position counted in the logged num_tokens
            assert batches[0]["input_ids"].size(0) > 1 and "attention_mask" not in batches[0]
            trainer.model.train()
            trainer.compute_loss(trainer.model, trainer._prepare_inputs(batches[0]))
            assert trainer._metrics["train"]["num_tokens"] == [batches[0]["input_ids"].numel()]
    (padded_loss, padded_tokens, padded_targets), (packed_loss, packed_tokens, packed_targets) = results[False], results[True]
    assert packed_targets == padded_targets  # the same assistant tokens are scored
    assert packed_loss == pytest.approx(padded_loss, abs=1e-5)
    assert packed_tokens < 0.9 * padded_tokens


def test_padding_free_reward_model_loss_equals_padded(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig

    from rlhfx.algos.rm import RlhfxRewardTrainer, ensure_pad_token

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    ensure_pad_token(model, tokenizer, say=lambda *a: None)
    torch.manual_seed(5)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.5)  # a random head, so rewards differ and the loss is not log 2
    encoded = encoded_pairs(tokenizer, 8)
    config = RewardConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False,
                          per_device_train_batch_size=8)
    losses = {}
    for packing in (False, True):
        trainer = RlhfxRewardTrainer(model=copy.deepcopy(model), args=config, train_dataset=Dataset.from_list(encoded),
                                     processing_class=tokenizer, packing=packing)
        trainer.args.max_length = 64
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
        trainer.model.train()
        losses[packing] = trainer.compute_loss(trainer.model, batch).item()
    assert abs(losses[False] - 0.6931) > 1e-3
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_flash_attention_gets_one_row_with_the_same_log_probs(tiny):
    """FlashAttention reads sequence starts from the position ids of a single row only, so under it every
    sequence goes into one row; that layout scores each sequence as the padded batch does (sdpa here)."""
    from rlhfx.training.packing import padding_free, row_capacity, sum_per_sequence

    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert row_capacity(flash, 64) is None and row_capacity(SimpleNamespace(config=SimpleNamespace(
        _attn_implementation="sdpa")), 64) == 64
    model, tokenizer = tiny
    texts = ["The red fox is big.", "Hi.", "The quick brown fox jumps over the lazy dog. It is fast and brave."]
    tokenizer.padding_side = "right"  # as the trainers collate
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        logits = model(**batch).logits[:, :-1]
        padded = (torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
                  * (labels[:, 1:] != -100)).sum(-1)
        kwargs, packed_labels, segments = padding_free(batch["input_ids"], batch["attention_mask"], labels, None)
        assert kwargs["input_ids"].size(0) == 1 and kwargs["input_ids"].size(1) == batch["attention_mask"].sum()
        targets = packed_labels[:, 1:]
        logits = model(**kwargs, use_cache=False).logits[:, :-1]  # with a cache, transformers ignores the seams
        logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])
        packed = sum_per_sequence(logp.squeeze(-1) * (targets != -100), segments, len(texts))
    assert torch.allclose(packed, padded, atol=1e-5), (packed, padded)
