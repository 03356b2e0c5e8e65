"""`--rlhf_type gkd`: generalised knowledge distillation (Agarwal et al. 2024; ms-swift's gkd) on TRL's GKDTrainer.

Each step, with probability --lmbda the student completes the batch's prompts itself (on-policy, sampled at
--temperature, at most --max_completion_length tokens); otherwise the data's responses are used. The loss is the
generalised Jensen-Shannon divergence between teacher and student next-token distributions on the completion
tokens: --beta 0 is the forward KL(teacher || student), 1 the reverse KL, in between the JSD with that mixture
(TRL's `generalized_jsd_loss`). --sft_alpha adds that weight times the NLL of the completion (ms-swift).

rlhfx encodes the SFT rows with its own templates, so this module gives GKDTrainer a collator over those token
ids (TRL's default one would re-render raw messages with the tokenizer's chat template): it builds the
`prompts` (left padded, everything before the last assistant answer) that on-policy generation starts from.
The teacher is loaded and checked as for `kd` (same vocabulary).
"""

import torch
import torch.nn.functional as F

from rlhfx.algos.kd import load_teacher


def last_answer_start(mask: list[int]) -> int:
    """Index where the last run of trained (assistant) tokens begins: the prompt of on-policy generation ends there."""
    end = max(i for i, m in enumerate(mask) if m)
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return start


class GKDCollator:
    """rlhfx-encoded SFT rows -> input_ids, attention_mask, labels (right padded) and prompts, prompt_attention_mask
    (left padded, for generation)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        ids = [list(r["input_ids"]) for r in rows]
        labels = [[t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])] for r in rows]
        prompts = [list(r["input_ids"][: last_answer_start(r["assistant_masks"])]) for r in rows]
        width, prompt_width = max(map(len, ids)), max(map(len, prompts))
        batch = {
            "input_ids": torch.tensor([x + [self.pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels]),
            "prompts": torch.tensor([[self.pad] * (prompt_width - len(p)) + p for p in prompts]),
            "prompt_attention_mask": torch.tensor([[0] * (prompt_width - len(p)) + [1] * len(p) for p in prompts]),
        }
        return batch


def sft_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL of the labelled (completion) tokens, next-token shifted."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def completion_tokens(labels: torch.Tensor) -> int:
    """Tokens the divergence is averaged over: the labelled ones after the next-token shift."""
    return int((labels[:, 1:] != -100).sum())


def build_trainer(ctx):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    args, options = ctx.args, ctx.options

    class Trainer(GKDTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self.data_tokens = completion_tokens(inputs["labels"])  # before an on-policy step replaces the labels
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if num_items_in_batch is not None and model.training:
                # TRL counted the data's response tokens; an on-policy batch holds the student's own completions
                num_items_in_batch = num_items_in_batch * completion_tokens(inputs["labels"]) / max(self.data_tokens, 1)
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            mode = "train" if model.training else "eval"
            self._metrics[mode]["gkd_loss"].append(loss.detach().item())
            if options.sft_alpha:
                nll = sft_nll(outputs.logits, inputs["labels"])
                self._metrics[mode]["nll"].append(nll.detach().item())
                loss = loss + options.sft_alpha * nll
            return (loss, outputs) if return_outputs else loss

    config = GKDConfig(**ctx.hf_args, max_length=args.max_length, lmbda=options.lmbda, beta=options.beta,
                       temperature=options.temperature, max_new_tokens=options.generate_max_len, seq_kd=False,
                       packing=False)
    pad = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else ctx.tokenizer.eos_token_id
    return Trainer(model=ctx.model, teacher_model=load_teacher(args, options.teacher_model, ctx.tokenizer, ctx.model), args=config,
                   data_collator=GKDCollator(pad), train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
                   processing_class=ctx.tokenizer, peft_config=ctx.peft_config, callbacks=ctx.callbacks)
