"""KTO with a micro batch of one row (ms-swift's default): z0 comes from another row's completion of the dataset."""

import pytest
from test_offline_losses import build, demo_rows, sequence_logp, sigmoid, tiny_models

from rlhfx.algos.kto import kl_partners
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def test_kl_partners_are_other_rows_of_other_prompts():
    prompts = [[1], [1], [2], [2], [3], [3]]  # the chosen and rejected rows of three preference pairs
    for seed in range(20):
        partners = kl_partners(prompts, seed)
        assert all(prompts[j] != prompts[i] for i, j in enumerate(partners))
    assert kl_partners(prompts, 0) != kl_partners(prompts, 1)  # a seeded shuffle, not a fixed neighbour


def test_kto_batch_of_one_row_uses_a_mismatched_completion(tmp_path):
    tokenizer, ref, policy = tiny_models()  # the reference is the perturbed copy, so the KL estimate is > 0
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    encoded = [{"prompt_ids": encoder.encode_prompt(r["prompt"]),
                "completion_ids": encoder.encode_completion(r["prompt"], r["completion"]),
                "label": r["label"]} for r in demo_rows("kto", 6)]
    beta, w_d, w_u = 0.2, 1.3, 0.7
    trainer = build("kto", ["--beta", str(beta), "--desirable_weight", str(w_d), "--undesirable_weight", str(w_u),
                            "--batch_size", "1"], tmp_path, policy, ref, tokenizer, encoded)
    assert trainer.args.per_device_train_batch_size == 1
    assert next(iter(trainer.get_train_dataloader()))["input_ids"].shape[0] == 1

    dataset = trainer.train_dataset
    completions = dataset["completion_ids"]
    for row in dataset:
        mismatched = row["KL_completion_ids"]
        assert dataset[completions.index(mismatched)]["prompt_ids"] != row["prompt_ids"]
        loss = trainer.compute_loss(trainer.model, trainer.data_collator([row])).item()
        r = (sequence_logp(policy, row["prompt_ids"], row["completion_ids"])[0]
             - sequence_logp(ref, row["prompt_ids"], row["completion_ids"])[0])
        z0 = max(0.0, sequence_logp(policy, row["prompt_ids"], mismatched)[0]
                 - sequence_logp(ref, row["prompt_ids"], mismatched)[0])
        assert z0 > 0.1  # a live reference point, from (x_i, y_j), j another row
        expected = w_d * (1 - sigmoid(beta * (r - z0))) if row["label"] else w_u * (1 - sigmoid(beta * (z0 - r)))
        assert loss == pytest.approx(expected, abs=1e-5)
        assert trainer._metrics["train"]["kl"][-1] == pytest.approx(z0, abs=1e-5)

