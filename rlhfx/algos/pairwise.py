"""The pairwise trainer: dpo (cDPO, IPO, RPO), cpo, simpo, orpo and nca, on TRL's DPOTrainer with our losses.

One trainer, a loss function from algos/losses.py and whether it needs a reference model: the record of
each algorithm (rlhfx/algos/__init__.py) names its loss, so a new pairwise loss is a function there plus a
record. TRL keeps the data collator, fused LM head, training loop, checkpoints and distributed plumbing;
rows arrive already tokenized by rlhfx's chat encoder.

Why our loss and not TRL's: TRL 1.16 ignores `label_smoothing` for the sigmoid loss and has no
per-sequence RPO term; its CPOTrainer/ORPOTrainer live in `trl.experimental`, tokenize text inside
`__init__`, compute full-vocabulary logits and build the loss inside `concatenated_forward` (ORPO's NLL even
covers the prompt). The batch layout of every pairwise loss is DPO's (prompt_ids/chosen_ids/rejected_ids),
so only the loss differs.

Reference-free losses: TRL's DPOTrainer loads a reference unless `precompute_ref_log_probs` is set, so it is
set and the precompute is a no-op (the loss never reads reference log-probs). The one leftover cost is TRL
hashing the weights once at start-up.
"""

import torch
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from rlhfx.algos import losses
from rlhfx.algos.losses import dpo_loss, preference_accuracy
from rlhfx.errors import RlhfxError
from rlhfx.training.packing import padding_free, row_capacity, sum_per_sequence
from rlhfx.training.scale import aux_loss_coef


class PairwiseTrainer(DPOTrainer):
    """DPOTrainer whose per-pair loss is `loss_fn` and which accepts pre-tokenized rows as they are.

    With a reference: loss_fn(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
    chosen_lengths=, rejected_lengths=, **loss_kwargs); without: the same minus the two reference log-probs.
    It returns (per-pair losses, chosen implicit rewards, rejected implicit rewards).
    """

    def __init__(self, *args, loss_kwargs: dict, loss_fn=dpo_loss, needs_reference: bool = True,
                 packing: bool = False, ref_offload: bool = False, **kwargs):
        self.loss_fn, self.loss_kwargs, self.needs_reference = loss_fn, loss_kwargs, needs_reference
        self.packing = packing
        super().__init__(*args, **kwargs)
        self.ref_offload = ref_offload and self.ref_model is not None
        if self.ref_offload:
            self.ref_model.to("cpu")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.needs_reference:
            return dataset  # reference-free: nothing to precompute
        return super()._precompute_ref_logps(dataset, name, batch_size)

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
        references = ()
        if self.needs_reference and self.precompute_ref_logps:
            references = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        elif self.needs_reference:
            references, _ = self.sequence_logps(model, inputs, True)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(
            chosen_logps, rejected_logps, *references, chosen_lengths=chosen_len, rejected_lengths=rejected_len,
            **self.loss_kwargs)
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


def build_trainer(ctx):
    """ctx: rlhfx.training.runner.RunContext; ctx.algorithm names the loss, ctx.options holds its flags."""
    args, algo, options = ctx.args, ctx.algorithm, ctx.options
    reference = algo.needs_reference
    config = DPOConfig(**ctx.hf_args, beta=options.beta, max_length=args.max_length,
                       precompute_ref_log_probs=args.precompute_ref_log_probs or not reference,
                       router_aux_loss_coef=aux_loss_coef(args, ctx.model))
    return PairwiseTrainer(
        model=ctx.model, ref_model=ctx.ref_model, args=config, train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset, processing_class=ctx.tokenizer, peft_config=ctx.peft_config,
        callbacks=ctx.callbacks, loss_fn=getattr(losses, algo.loss), needs_reference=reference,
        loss_kwargs=options.loss_kwargs(), packing=args.packing_samples, ref_offload=ref_offload(args))


def ref_offload(args) -> bool:
    """--ref_offload keeps the reference on the CPU between forwards: only meaningful with a GPU and a reference model."""
    if not args.ref_offload:
        return False
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
