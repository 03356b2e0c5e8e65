"""--precompute_ref_log_probs trains exactly like a live reference model, without keeping one.

Full DPO on the tiny model, 3 steps: with a live frozen copy as reference, and with the reference
log-probs computed once by the starting policy (no reference model kept). The logged losses must agree
to 1e-5; the later steps have a policy that moved away from the reference, so they test real margins.
"""

import copy

import pytest
from pairs import encoded_pairs

from rlhfx.registry.tiny import tiny_model_path


def test_precomputed_reference_trains_like_a_live_one(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from rlhfx.algos.pairwise import PairwiseTrainer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    start = AutoModelForCausalLM.from_pretrained(path)
    encoded = encoded_pairs(tokenizer, 24)
    losses = {}
    for precompute in (False, True):
        config = DPOConfig(output_dir=str(tmp_path / str(precompute)), use_cpu=True, report_to=[], bf16=False,
                           per_device_train_batch_size=8, max_steps=3, learning_rate=1e-3, logging_steps=1,
                           save_strategy="no", seed=1, precompute_ref_log_probs=precompute, disable_tqdm=True)
        trainer = PairwiseTrainer(model=copy.deepcopy(start), ref_model=None if precompute else copy.deepcopy(start),
                                  args=config, train_dataset=Dataset.from_list(encoded), processing_class=tokenizer,
                                  loss_kwargs={"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0,
                                              "rpo_alpha": 0.0})
        assert (trainer.ref_model is None) == precompute
        trainer.train()
        losses[precompute] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses[False]) == 3
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[False][-1] < losses[False][0] - 0.01  # the policy moved, so the reference mattered
