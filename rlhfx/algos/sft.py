"""`rlhfx sft`: supervised fine-tuning on TRL's SFTTrainer.

Rows arrive tokenized by rlhfx's chat encoder with `assistant_masks`, so the loss covers the
assistant tokens and end-of-turn tokens only, exactly as each model's template defines them.
`--packing_samples` is TRL's best-fit-decreasing packing: whole samples share rows of --max_length
tokens, kept apart by restarting position ids (padding-free), so --batch_size counts packed rows.
"""

from trl import SFTConfig, SFTTrainer

from rlhfx.training.scale import aux_loss_coef

KIND = "sft"
DEFAULT_LR = {"full": 1e-4, "lora": 2e-4}


def build_trainer(ctx):
    args = ctx.args
    config = SFTConfig(**ctx.hf_args, max_length=args.max_length, assistant_only_loss=False,
                       completion_only_loss=False, packing=args.packing_samples, packing_strategy="bfd",
                       router_aux_loss_coef=aux_loss_coef(args, ctx.model))
    return SFTTrainer(model=ctx.model, args=config, train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
                      processing_class=ctx.tokenizer, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
