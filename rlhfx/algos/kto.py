"""`--rlhf_type kto`: KTO on unpaired (prompt, completion, label) rows, on TRL's KTOTrainer with `kto_loss`.

TRL keeps the collator, reference handling (frozen copy, or the adapter-disabled base under LoRA),
training loop, checkpoints and distributed plumbing; rlhfx supplies the pre-tokenized rows and the loss.

The KL reference point z0 comes from mismatched pairs (x_i, y_(i+1)) of the batch. TRL builds those
pairs once, in dataset order, which is why it insists on sequential (unshuffled) sampling: paired data
turned into unpaired rows (chosen then rejected of the same prompt) would then pair a prompt with its
own other answer. rlhfx builds them inside every collated batch instead (`KLPairCollator`), so the
training data is shuffled like in any other run. A batch of one row (ms-swift's default micro batch, or an
epoch's last batch) has no other row: its mismatched completion is then another row's of the dataset
(`kl_partners`), so z0 is still estimated from a mismatched pair, and TRL's refusal of a micro batch of 1 does
not apply.
"""

import random

import torch
from torch.utils.data import RandomSampler
from trl import KTOConfig, KTOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
from trl.trainer.utils import use_adapter

from rlhfx.algos.losses import kto_loss


def kl_partners(prompts: list[list[int]], seed: int) -> list[int]:
    """For every row, the index of the row whose completion is its mismatched one when it is alone in a batch.

    That is its successor in a seeded shuffle of the dataset, skipping up to 14 rows of the same prompt (a bound that
    keeps a one-prompt dataset linear), so that the chosen and rejected rows of one preference pair do not stand for
    each other's mismatched completion.
    """
    n = len(prompts)
    order = random.Random(seed).sample(range(n), n)
    partners = [0] * n
    for k, i in enumerate(order):
        candidates = [order[(k + step) % n] for step in range(1, min(n, 16))] or [i]
        partners[i] = next((j for j in candidates if prompts[j] != prompts[i]), candidates[0])
    return partners


def with_kl_partners(dataset, seed: int):
    """Adds `KL_completion_ids`: the completion of the row `kl_partners` picks, for batches of one row."""
    completions = dataset["completion_ids"]
    partners = kl_partners(dataset["prompt_ids"], seed)
    return dataset.add_column("KL_completion_ids", [completions[j] for j in partners])


class KLPairCollator:
    """Gives row i of a batch `KL_completion_ids` = row i+1's completion (wrapping), then pads with TRL's collator.

    A batch of one row keeps the `KL_completion_ids` that `with_kl_partners` gave it: another row's completion.
    """

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        n = len(examples)
        if n > 1:
            examples = [{**row, "KL_completion_ids": examples[(i + 1) % n]["completion_ids"]}
                        for i, row in enumerate(examples)]
        return self.collator(examples)


class RlhfxKTOTrainer(KTOTrainer):
    """KTOTrainer whose loss is `kto_loss`, which accepts pre-tokenized rows and shuffles its training data."""

    def __init__(self, *args, loss_kwargs: dict, **kwargs):
        self.loss_kwargs = loss_kwargs
        # TRL refuses a micro batch of 1 because its mismatched pairs are in-batch only; rlhfx pairs such a row with
        # another row of the dataset. TRL checks before it prepares the datasets, which restores the real size
        # (before `Trainer.__init__` reads it for the dataloader and DeepSpeed).
        config = kwargs["args"]
        self.micro_batch_size = config.per_device_train_batch_size
        config.per_device_train_batch_size = max(2, self.micro_batch_size)
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        args.per_device_train_batch_size = self.micro_batch_size
        if "prompt_ids" in dataset.column_names:
            return with_kl_partners(dataset, args.seed)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _get_train_sampler(self, train_dataset=None):
        # KLPairCollator pairs rows within each batch, so TRL's sequential-order requirement does not apply
        return RandomSampler(self.train_dataset if train_dataset is None else train_dataset)

    def completion_logps(self, model, inputs, prefix: str, reference: bool, grad: bool) -> torch.Tensor:
        """Summed completion log-probs of `{prefix}input_ids` under the policy or the reference."""
        input_ids, mask = inputs[f"{prefix}input_ids"], inputs[f"{prefix}completion_mask"]
        kwargs = {"input_ids": input_ids, "attention_mask": inputs[f"{prefix}attention_mask"], "use_cache": False,
                  "labels": input_ids.masked_fill(mask == 0, -100), "fused_lm_head": True}
        if reference:
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                if self.ref_model is None:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        outputs = self.model(**kwargs)
                else:
                    outputs = self.ref_model(**kwargs)
        elif grad:
            outputs = model(**kwargs)
        else:
            with torch.no_grad():
                outputs = model(**kwargs)
        return outputs.log_probs[:, -(input_ids.size(1) - 1):].sum(dim=1)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        labels = inputs["label"].bool()
        logps = self.completion_logps(model, inputs, "", reference=False, grad=True)
        ref_logps = self.completion_logps(model, inputs, "", reference=True, grad=False)
        gather = self.accelerator.gather_for_metrics
        # z0 is one number for the whole (global) batch: every rank sees every mismatched pair's estimate
        kl_logps = gather(self.completion_logps(model, inputs, "KL_", reference=False, grad=False))
        ref_kl_logps = gather(self.completion_logps(model, inputs, "KL_", reference=True, grad=False))
        losses, rewards, z0 = kto_loss(logps, ref_logps, labels, kl_logps, ref_kl_logps, **self.loss_kwargs)
        rewards_all, labels_all = gather(rewards), gather(labels)
        metrics = self._metrics[mode]
        metrics["kl"].append(z0.item())
        if labels_all.any():
            metrics["rewards/chosen"].append(rewards_all[labels_all].mean().item())
        if (~labels_all).any():
            metrics["rewards/rejected"].append(rewards_all[~labels_all].mean().item())
        if labels_all.any() and (~labels_all).any():
            metrics["rewards/margins"].append(metrics["rewards/chosen"][-1] - metrics["rewards/rejected"][-1])
        metrics["logps/completion"].append(gather(logps.detach()).mean().item())
        loss = losses.mean()
        return (loss, None) if return_outputs else loss


def weight_advice(n_desirable: int, n_undesirable: int, w_d: float, w_u: float) -> str | None:
    """A warning when w_d n_d / (w_u n_u) is outside [1, 4/3] (KTO paper, eq. 8), naming the weight to change."""
    if not n_desirable or not n_undesirable:
        return None
    ratio = w_d * n_desirable / (w_u * n_undesirable)
    if 1.0 <= ratio <= 4 / 3:
        return None
    head = (f"{n_desirable} desirable and {n_undesirable} undesirable rows with --desirable_weight {w_d:g} and "
            f"--undesirable_weight {w_u:g} give w_d*n_d/(w_u*n_u) = {ratio:.2f}")
    if ratio < 1:
        low, high = w_u * n_undesirable / n_desirable, 4 / 3 * w_u * n_undesirable / n_desirable
        return f"{head}, below the recommended [1, 4/3]: set --desirable_weight to {low:.2f}-{high:.2f}."
    low, high = 3 / 4 * w_d * n_desirable / n_undesirable, w_d * n_desirable / n_undesirable
    return f"{head}, above the recommended [1, 4/3]: set --undesirable_weight to {low:.2f}-{high:.2f}."


def paired_datasets(args) -> list[str]:
    """The --dataset specs holding preference pairs, which the data layer splits into unpaired rows."""
    from rlhfx.data.formats import detect_format, rename_keys
    from rlhfx.data.sources import read_dataset, split_take
    from rlhfx.registry.datasets import get_dataset_entry
    from rlhfx.training.runner import data_config

    renames = data_config(args, "unpaired").renames()
    paired = []
    for spec in args.dataset:
        entry = get_dataset_entry(split_take(spec.strip())[0])
        if entry is not None:
            is_pairs = entry.kind == "pairwise"
        else:
            first = next((row for row in read_dataset(spec).rows if isinstance(row, dict)), {})
            keys = set(rename_keys(first, renames))
            is_pairs = detect_format(keys) == "preference" or "rejected_response" in keys
        if is_pairs:
            paired.append(spec)
    return paired


def report_data(ctx) -> None:
    from rich.markup import escape

    from rlhfx.training.runner import say

    pairs = paired_datasets(ctx.args)
    if pairs:
        say(f"  kto: {', '.join(pairs)} hold preference pairs; each pair gives two rows: chosen -> desirable, "
            "rejected -> undesirable.")
    labels = ctx.train_dataset["label"]
    advice = weight_advice(sum(labels), len(labels) - sum(labels), ctx.options.desirable_weight,
                           ctx.options.undesirable_weight)
    if advice:
        say(f"[yellow]  kto warning: {escape(advice)}[/yellow]")


def build_trainer(ctx):
    options = ctx.options.loss_kwargs()
    report_data(ctx)
    config = KTOConfig(**ctx.hf_args, **options, max_length=ctx.args.max_length,
                       precompute_ref_log_probs=False)
    collator = KLPairCollator(DataCollatorForUnpairedPreference(pad_token_id=ctx.tokenizer.pad_token_id,
                                                                max_length=ctx.args.max_length))
    return RlhfxKTOTrainer(
        model=ctx.model, ref_model=ctx.ref_model, args=config, data_collator=collator,
        train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset, processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config, callbacks=ctx.callbacks, loss_kwargs=options)
