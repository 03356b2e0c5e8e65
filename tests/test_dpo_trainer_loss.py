"""The loss the DPO trainer actually optimises equals ALGORITHMS.md on log-probs computed independently.

Policy = tiny model with perturbed weights, reference = the unperturbed copy, so z != 0. The
expected value is computed here from a plain forward pass and the formulas written out with math.
"""

import copy
import json
import math

import pytest
import torch

from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def sequence_logps(model, input_ids, completion_mask):
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[:, :-1]
    token_logps = torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return (token_logps * mask).sum(1).tolist(), mask.sum(1).tolist()


@pytest.mark.parametrize("options", [
    dict(loss_type="sigmoid", label_smoothing=0.0, rpo_alpha=0.0),
    dict(loss_type="sigmoid", label_smoothing=0.2, rpo_alpha=0.0),
    dict(loss_type="ipo", label_smoothing=0.0, rpo_alpha=0.0),
    dict(loss_type="sigmoid", label_smoothing=0.0, rpo_alpha=0.7),
])
def test_trainer_loss_equals_formula(tmp_path, options):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from rlhfx.algos.pairwise import PairwiseTrainer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path)
    policy = copy.deepcopy(ref)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    rows = [json.loads(line) for line in (DATA_DIR / "demo_pref_train.jsonl").read_text().splitlines()[:4]]
    encoded = []
    for row in rows:
        prompt = [{"role": "user", "content": row["prompt"]}]
        encoded.append({"prompt_ids": encoder.encode_prompt(prompt),
                        "chosen_ids": encoder.encode_completion(prompt, row["chosen"]),
                        "rejected_ids": encoder.encode_completion(prompt, row["rejected"])})
    beta = 0.1
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], beta=beta, bf16=False,
                       per_device_train_batch_size=4)
    trainer = PairwiseTrainer(model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(encoded),
                              processing_class=tokenizer, loss_kwargs={"beta": beta, **options})
    batch = trainer.data_collator(encoded)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch).item()

    logps, lengths = sequence_logps(policy, batch["input_ids"], batch["completion_mask"])
    ref_logps, _ = sequence_logps(ref, batch["input_ids"], batch["completion_mask"])
    n, e, a = len(rows), options["label_smoothing"], options["rpo_alpha"]
    expected = []
    for i in range(n):
        (c, r), (rc, rr), (lc, lr) = (logps[i], logps[n + i]), (ref_logps[i], ref_logps[n + i]), (lengths[i], lengths[n + i])
        if options["loss_type"] == "ipo":
            value = ((c - rc) / lc - (r - rr) / lr - 1 / (2 * beta)) ** 2
        else:
            z = (c - r) - (rc - rr)
            log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
            value = -(1 - e) * log_sig(beta * z) - e * log_sig(-beta * z)
        expected.append(value + a * (-c / lc))
    assert loss == pytest.approx(sum(expected) / n, abs=1e-5)
    assert any(abs((logps[i] - logps[n + i]) - (ref_logps[i] - ref_logps[n + i])) > 1e-3 for i in range(n))
