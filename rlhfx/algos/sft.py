"""`rlhfx sft`: supervised fine-tuning on TRL's SFTTrainer.

Rows arrive tokenized by rlhfx's chat encoder with `assistant_masks`, so the loss covers the
assistant tokens and end-of-turn tokens only, exactly as each model's template defines them.
"""

from trl import SFTConfig, SFTTrainer

KIND = "sft"
DEFAULT_LR = {"full": 1e-4, "lora": 2e-4}


def build_trainer(ctx):
    config = SFTConfig(**ctx.hf_args, max_length=ctx.args.max_length, assistant_only_loss=False,
                       completion_only_loss=False, packing=False)
    return SFTTrainer(model=ctx.model, args=config, train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
                      processing_class=ctx.tokenizer, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
