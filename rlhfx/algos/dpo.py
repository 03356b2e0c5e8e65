"""`--rlhf_type dpo`: DPO, cDPO, IPO and RPO on TRL's DPOTrainer, with the loss from algos/losses.py.

TRL 1.16 ignores `label_smoothing` for the sigmoid loss and has no per-sequence RPO term, so the
loss computation is ours (`dpo_loss`); TRL keeps the data collator, reference handling, training
loop, checkpoints and distributed plumbing. Rows arrive already tokenized by rlhfx's chat encoder.
"""

import torch
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from rlhfx.algos.losses import dpo_loss, preference_accuracy
from rlhfx.errors import RlhfxError
from rlhfx.training.packing import padding_free, row_capacity, sum_per_sequence
from rlhfx.training.scale import aux_loss_coef

KIND = "pairwise"
NEEDS_REFERENCE = True
DEFAULT_BETA = 0.1


class RlhfxDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is `dpo_loss` and which accepts pre-tokenized rows as they are."""

    def __init__(self, *args, rlhfx_loss: dict, packing: bool = False, ref_offload: bool = False, **kwargs):
        self.rlhfx_loss = rlhfx_loss
        self.packing = packing
        super().__init__(*args, **kwargs)
        self.ref_offload = ref_offload and self.ref_model is not None
        if self.ref_offload:
            self.ref_model.to("cpu")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def sequence_logps(self, model, inputs, reference: bool, router_logits: bool = False):
        """Summed response log-probs (policy or reference) and response token counts, chosen first.

        With `router_logits` (MoE aux loss on), the policy's load-balancing loss is kept in `self.aux_loss`.
        """
        mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(mask == 0, -100)
        if self.packing:
            kwargs, labels, segments = padding_free(inputs["input_ids"], inputs["attention_mask"], labels,
                                                    row_capacity(self.model, self.args.max_length))
        else:
            kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        kwargs["use_cache"] = False
        if reference:
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                if self.ref_model is None:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        outputs = self.model(**kwargs, labels=labels, fused_lm_head=True)
                else:
                    outputs = self.reference_forward(kwargs, labels)
        else:
            outputs = model(**kwargs, labels=labels, fused_lm_head=True,
                            **({"output_router_logits": True} if router_logits else {}))
        if self.packing:
            logps = sum_per_sequence(outputs.log_probs, segments, mask.size(0))
        else:
            logps = outputs.log_probs[:, -(mask.size(1) - 1):].sum(dim=1)
        if router_logits:
            self.aux_loss = outputs.aux_loss
        return logps.chunk(2), mask[:, 1:].sum(dim=1).float().chunk(2)

    def reference_forward(self, kwargs, labels):
        """The frozen reference's forward; with --ref_offload it visits the GPU only for this call."""
        if not self.ref_offload:
            return self.ref_model(**kwargs, labels=labels, fused_lm_head=True)
        self.ref_model.to(self.accelerator.device)
        try:
            return self.ref_model(**kwargs, labels=labels, fused_lm_head=True)
        finally:
            self.ref_model.to("cpu")

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        (chosen_logps, rejected_logps), (chosen_len, rejected_len) = self.sequence_logps(
            model, inputs, False, router_logits=self.aux_loss_enabled)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            (ref_chosen, ref_rejected), _ = self.sequence_logps(model, inputs, True)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_lengths=chosen_len,
            rejected_lengths=rejected_len, **self.rlhfx_loss)
        self.log_pairwise_metrics(mode, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, chosen_len)
        loss = losses.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * self.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(self.aux_loss.detach()).mean().item())
        return (loss, None) if return_outputs else loss

    def log_pairwise_metrics(self, mode, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, chosen_len):
        """The metrics every pairwise loss reports (ALGORITHMS.md), gathered over ranks."""
        gather = self.accelerator.gather_for_metrics
        chosen_all, rejected_all = gather(chosen_rewards), gather(rejected_rewards)
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(chosen_all.mean().item())
        metrics["rewards/rejected"].append(rejected_all.mean().item())
        metrics["rewards/accuracies"].append(preference_accuracy(chosen_all, rejected_all).item())
        metrics["rewards/margins"].append((chosen_all - rejected_all).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        metrics["nll/chosen"].append(gather(-chosen_logps.detach() / chosen_len).mean().item())


def beta_of(args) -> float:
    return DEFAULT_BETA if args.beta is None else args.beta


DPO_LOSS_TYPES = ("sigmoid", "ipo")


def loss_options(args) -> dict:
    """Validated loss flags. OpenRLHF's --ipo is IPO on summed log-ratios (its formula, so its recipes optimise
    the same objective); --loss_type ipo averages them per token (TRL, ms-swift). cDPO smoothing stays below 1/2."""
    if args.loss_type not in (None, *DPO_LOSS_TYPES):
        raise RlhfxError(f"--loss_type {args.loss_type} is an online RL loss; --rlhf_type {args.rlhf_type} takes "
                         f"{' or '.join(DPO_LOSS_TYPES)}.", "use --loss_type sigmoid or ipo, or drop it.")
    if args.ipo and args.loss_type not in (None, "ipo"):
        raise RlhfxError(f"--ipo and --loss_type {args.loss_type} ask for two different losses.", "keep one of them.")
    loss_type = "ipo_sum" if args.ipo else args.loss_type or "sigmoid"
    if not 0.0 <= args.label_smoothing < 0.5:
        raise RlhfxError(f"--label_smoothing must be in [0, 0.5), got {args.label_smoothing}.",
                         "it is the assumed share of flipped labels (cDPO); 0.1 is a common choice.")
    if loss_type != "sigmoid" and args.label_smoothing:
        raise RlhfxError("--label_smoothing (cDPO) applies to the sigmoid loss, not to IPO.",
                         "drop --label_smoothing or use --loss_type sigmoid.")
    if args.rpo_alpha < 0:
        raise RlhfxError(f"--rpo_alpha must be >= 0, got {args.rpo_alpha}.")
    return {"beta": beta_of(args), "loss_type": loss_type, "label_smoothing": args.label_smoothing,
            "rpo_alpha": args.rpo_alpha}


def check_args(args) -> None:
    """Called by `rlhfx rlhf` before anything loads."""
    loss_options(args)


def build_trainer(ctx):
    """ctx: rlhfx.training.context.RunContext with model, ref model, tokenizer, datasets and HF arguments."""
    args = ctx.args
    config = DPOConfig(**ctx.hf_args, beta=beta_of(args), max_length=args.max_length,
                       precompute_ref_log_probs=args.precompute_ref_log_probs,
                       router_aux_loss_coef=aux_loss_coef(args, ctx.model))
    return RlhfxDPOTrainer(
        model=ctx.model, ref_model=ctx.ref_model, args=config, train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset, processing_class=ctx.tokenizer, peft_config=ctx.peft_config,
        callbacks=ctx.callbacks, rlhfx_loss=loss_options(args), packing=args.packing_samples,
        ref_offload=ref_offload(args))


def ref_offload(args) -> bool:
    """--ref_offload keeps the reference on the CPU between forwards: only meaningful with a GPU and a reference model."""
    if not args.ref_offload:
        return False
    import torch

    if not torch.cuda.is_available():
        raise RlhfxError("--ref_offload moves the reference model off the GPU, but no CUDA GPU is visible.",
                         "drop --ref_offload (on CPU the reference already lives in host memory).")
    if args.deepspeed:
        raise RlhfxError("--ref_offload and --deepspeed both place the reference model.",
                         "use --deepspeed zero3_offload to offload it under DeepSpeed, or drop --deepspeed.")
    if args.precompute_ref_log_probs:
        raise RlhfxError("--ref_offload with --precompute_ref_log_probs: no reference model is kept during training.",
                         "drop --ref_offload.")
    return True
