"""`--rlhf_type cpo`: CPO, and the reference-free pairwise trainer that SimPO and ORPO reuse.

Why rlhfx's DPO trainer and not TRL's CPOTrainer/ORPOTrainer: those live in `trl.experimental`,
tokenize text inside `__init__` (`tokenize_row`), compute full-vocabulary logits, and build their
loss inside `concatenated_forward`/`get_batch_loss_metrics` (ORPO's NLL even covers the prompt).
Accepting pre-tokenized rows and using our loss would mean overriding most of each class. The batch
layout of CPO, SimPO and ORPO is DPO's (prompt_ids/chosen_ids/rejected_ids), so the subclass below of
`RlhfxDPOTrainer` overrides only the loss; TRL's stable DPOTrainer keeps the collator, fused LM head,
training loop, checkpoints and distributed plumbing, and no `trl.experimental` import is needed.

No reference model: TRL's DPOTrainer loads one unless `precompute_ref_log_probs` is set, so it is set
and the precompute is a no-op (`_compute_loss` never reads reference log-probs). The one leftover cost
is TRL hashing the weights once at start-up.
"""

from rlhfx.algos.dpo import RlhfxDPOTrainer
from rlhfx.algos.losses import cpo_loss
from rlhfx.errors import RlhfxError

KIND = "pairwise"
DEFAULT_BETA = 0.1
DEFAULT_CPO_ALPHA = 1.0


class ReferenceFreeTrainer(RlhfxDPOTrainer):
    """DPOTrainer without a reference model whose per-pair loss is `loss_fn` from algos/losses.py.

    loss_fn(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, **loss_options) returns
    (per-pair losses, chosen implicit rewards, rejected implicit rewards).
    """

    def __init__(self, *args, loss_fn, loss_options: dict, **kwargs):
        self.loss_fn = loss_fn
        super().__init__(*args, rlhfx_loss=loss_options, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return dataset  # reference-free: nothing to precompute

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        (chosen_logps, rejected_logps), (chosen_len, rejected_len) = self.sequence_logps(model, inputs, False)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(
            chosen_logps, rejected_logps, chosen_len, rejected_len, **self.rlhfx_loss)
        self.log_pairwise_metrics(mode, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, chosen_len)
        loss = losses.mean()
        return (loss, None) if return_outputs else loss


def check_no_reference(args, name: str) -> None:
    if args.ref_model:
        raise RlhfxError(f"--rlhf_type {name} is reference-free, so --ref_model {args.ref_model} would be ignored.",
                         "drop --ref_model, or use --rlhf_type dpo or kto, which use a reference model.")


def build_reference_free_trainer(ctx, name: str, beta: float, loss_fn, loss_options: dict):
    """The trainer for cpo, simpo and orpo: the same batches, a different `loss_fn` from losses.py."""
    from trl import DPOConfig

    check_no_reference(ctx.args, name)
    config = DPOConfig(**ctx.hf_args, beta=beta, max_length=ctx.args.max_length, precompute_ref_log_probs=True)
    return ReferenceFreeTrainer(
        model=ctx.model, ref_model=None, args=config, train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset, processing_class=ctx.tokenizer, peft_config=ctx.peft_config,
        callbacks=ctx.callbacks, loss_fn=loss_fn, loss_options={"beta": beta, **loss_options})


def loss_options(args) -> dict:
    beta = DEFAULT_BETA if args.beta is None else args.beta
    cpo_alpha = DEFAULT_CPO_ALPHA if args.cpo_alpha is None else args.cpo_alpha
    if beta <= 0:
        raise RlhfxError(f"--beta must be > 0 for cpo, got {beta}.", "0.1 is the usual value.")
    if cpo_alpha < 0:
        raise RlhfxError(f"--cpo_alpha must be >= 0, got {cpo_alpha}.", "1.0 (the default) keeps the NLL term on.")
    return {"beta": beta, "cpo_alpha": cpo_alpha}


def build_trainer(ctx):
    options = loss_options(ctx.args)
    beta = options.pop("beta")
    return build_reference_free_trainer(ctx, "cpo", beta, cpo_loss, options)
