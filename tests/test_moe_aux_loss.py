"""--aux_loss_coef adds coef x the MoE router load-balancing loss to the DPO loss (and only to the policy's).

A randomly initialised 2-layer Mixtral (4 experts, top-2) with the tiny tokenizer; the same batch with
coef 0 and coef 0.5: the losses differ by exactly 0.5 x the router loss the model returned (1e-6).
"""

import copy

import pytest
import torch
from pairs import encoded_pairs

from rlhfx.registry.tiny import tiny_model_path


def test_dpo_adds_weighted_router_loss(tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM
    from trl import DPOConfig

    from rlhfx.algos.pairwise import PairwiseTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2,
                           pad_token_id=tokenizer.pad_token_id)
    model = MixtralForCausalLM(config)
    encoded = encoded_pairs(tokenizer, 4)
    losses, aux = {}, {}
    for coef in (0.0, 0.5):
        args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False,
                         per_device_train_batch_size=4, router_aux_loss_coef=coef)
        trainer = PairwiseTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(model), args=args,
                                  train_dataset=Dataset.from_list(encoded), processing_class=tokenizer,
                                  loss_kwargs={"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0,
                                              "rpo_alpha": 0.0})
        batch = trainer.data_collator(encoded)
        trainer.model.train()
        losses[coef] = trainer.compute_loss(trainer.model, batch).item()
        aux[coef] = trainer.aux_loss.item() if trainer.aux_loss_enabled else None
    assert aux[0.0] is None and aux[0.5] > 0
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * aux[0.5], abs=1e-6)
    assert losses[0.0] == pytest.approx(0.6931472, abs=1e-5)  # policy == reference: the DPO part is log 2
