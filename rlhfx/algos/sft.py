"""`rlhfx sft`: supervised fine-tuning on TRL's SFTTrainer.

Rows arrive tokenized by rlhfx's chat encoder with `assistant_masks`, so the loss covers the
assistant tokens and end-of-turn tokens only, exactly as each model's template defines them.
`--packing_samples` is TRL's best-fit-decreasing packing: whole samples share rows of --max_length
tokens, kept apart by restarting position ids (padding-free), so --batch_size counts packed rows. Under
FlashAttention a batch's rows are laid end to end in one (TRL's collator); under sdpa and eager they stay
separate rows (PackedRowsCollator), which keeps their dense attention masks small.
"""

from trl import SFTConfig, SFTTrainer

from rlhfx.training.packing import PackedRowsCollator, row_capacity
from rlhfx.training.scale import aux_loss_coef



class PackedRowsSFTTrainer(SFTTrainer):
    """SFTTrainer fed PackedRowsCollator's rows. TRL counts a batch without an attention mask as one row's width
    (its own padding-free batches are one row), so the logged num_tokens adds the other rows' positions."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counted = self._total_train_tokens
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self._total_train_tokens != counted:  # a training batch was just counted
            self._total_train_tokens = counted + (self._total_train_tokens - counted) * inputs["position_ids"].size(0)
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result


def build_trainer(ctx):
    args = ctx.args
    config = SFTConfig(**ctx.hf_args, max_length=args.max_length, assistant_only_loss=False,
                       completion_only_loss=False, packing=args.packing_samples, packing_strategy="bfd",
                       router_aux_loss_coef=aux_loss_coef(args, ctx.model))
    separate_rows = args.packing_samples and row_capacity(ctx.model, args.max_length) is not None
    trainer = (PackedRowsSFTTrainer if separate_rows else SFTTrainer)(
        model=ctx.model, args=config, train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
    if separate_rows:
        trainer.data_collator = PackedRowsCollator(ctx.tokenizer.pad_token_id)  # TRL refuses one at construction
    return trainer
