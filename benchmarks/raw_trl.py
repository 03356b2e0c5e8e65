"""The baseline for benchmarks/overhead.py: the same SFT or DPO run written directly against TRL, as a user would.

The tokenizer's own chat template, TRL's trainer with default data handling; same model, rows, batch, steps,
learning rate and seed as the rlhfx command it is compared with, and the same tokens in every batch. SFT rows are
conversational, the loss on the assistant turns by the template's {% generation %} markers; a template without
them (a real model's) gets TRL's prompt-completion rows instead: the loss on the last answer, the same forward.
DPO prompts are rendered by the chat template and the answers are plain text, which TRL ends with the EOS
(end-of-turn) token as rlhfx does: conversational DPO rows would also train the newline the template puts after
the end-of-turn token, one token more per answer than rlhfx.
Writes {"train_seconds", "global_step"} (the wall time of trainer.train()) to --out.
"""

import argparse
import json
import time
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer


def rows(path: str, algo: str, tokenizer) -> Dataset:
    data = [json.loads(line) for line in Path(path).read_text().splitlines()]
    if algo == "sft" and "{% generation %}" not in tokenizer.chat_template:  # no assistant mask: TRL's prompt-completion
        data = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in data]
    if algo == "dpo":  # the prompt rendered by the chat template; TRL ends each answer with the EOS (end-of-turn) token
        data = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                                         add_generation_prompt=True),
                 "chosen": r["chosen"], "rejected": r["rejected"]} for r in data]
    return Dataset.from_list(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("algo", choices=("sft", "dpo"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--out", required=True)
    opts = parser.parse_args()
    common = dict(output_dir=opts.output_dir, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
                  learning_rate=opts.lr, lr_scheduler_type="cosine", seed=42, use_cpu=True, bf16=False,
                  report_to=[], logging_steps=5, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                  max_length=512, gradient_checkpointing=False)  # TRL defaults to True; rlhfx turns it off on CPU
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    model = AutoModelForCausalLM.from_pretrained(opts.model, dtype="float32")
    if opts.algo == "sft":
        from trl import SFTConfig, SFTTrainer

        masks = "{% generation %}" in tokenizer.chat_template
        trainer = SFTTrainer(model=model, args=SFTConfig(**common, assistant_only_loss=masks),
                             train_dataset=rows(opts.data, "sft", tokenizer), processing_class=tokenizer)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common, beta=0.1),
                             train_dataset=rows(opts.data, "dpo", tokenizer), processing_class=tokenizer)
    start = time.time()
    result = trainer.train()
    Path(opts.out).write_text(json.dumps({"train_seconds": time.time() - start, "global_step": result.global_step}))


if __name__ == "__main__":
    main()
