"""`--rlhf_type rm`: a Bradley-Terry outcome reward model on TRL's RewardTrainer, loss from algos/losses.py.

The model is `AutoModelForSequenceClassification(num_labels=1)` (the runner loads it so: its record's model_class);
its reward r(x, y) is the scalar head at the last non-pad token of prompt + response
(rlhfx.rewards.score). Loss per pair: -log sigma(r(x,yw) - r(x,yl) - margin), margin from the data's
optional `margin` column, else 0 (`rm_loss`). TRL keeps the collator, training loop, checkpoints
and distributed plumbing.

Scores are only right when the pad token differs from EOS (otherwise the head is read before the
final EOS, or on the wrong token): a tokenizer without its own pad token pads with an existing token
(unk, or one named for padding) where it has one, else gets a new one and resized embeddings. Under LoRA the score head is trained and saved in full (`modules_to_save`),
so the adapter folder alone reproduces the scores on its base.

Held-out metrics are computed over the whole validation set at once (not averaged per batch), and
the per-pair scores of the latest evaluation are written to `eval_scores.jsonl` in the output folder.
"""

import json
from pathlib import Path

import torch
from trl import RewardConfig, RewardTrainer

from rlhfx.algos.losses import preference_accuracy, rm_loss
from rlhfx.rewards.score import reward_pair, sequence_rewards
from rlhfx.training.packing import packed_sequence_rewards, row_capacity

PAD_TOKEN = "<|pad|>"


class RlhfxRewardTrainer(RewardTrainer):
    """RewardTrainer whose loss is `rm_loss`, which accepts rlhfx's encoded pairs and reports exact held-out metrics."""

    def __init__(self, *args, packing: bool = False, **kwargs):
        self._eval_pairs: list[torch.Tensor] = []
        self.last_eval_scores: torch.Tensor | None = None
        self.packing = packing
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            dataset = dataset.map(_to_reward_columns, remove_columns=dataset.column_names)
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        if self.packing:
            head = next(module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] == "score")
            rewards = packed_sequence_rewards(model, head, inputs["input_ids"], inputs["attention_mask"],
                                              row_capacity(self.model, self.args.max_length))
        else:
            rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"])
        chosen, rejected = rewards.chunk(2)
        loss = rm_loss(chosen, rejected, inputs.get("margin")).mean()
        with torch.no_grad():
            gather = self.accelerator.gather_for_metrics
            pairs = torch.stack([gather(chosen.detach()), gather(rejected.detach())], dim=-1).float()
            if mode == "eval":
                self._eval_pairs.append(pairs.cpu())
            else:
                metrics = self._metrics[mode]
                for key, value in pair_metrics(pairs).items():
                    metrics[key].append(value)
        return (loss, {"rewards": torch.stack([chosen, rejected], dim=-1)}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if not self.model.training and self._eval_pairs:
            pairs = torch.cat(self._eval_pairs)
            self._eval_pairs = []
            self.last_eval_scores = pairs
            self._metrics["eval"].clear()
            for key, value in pair_metrics(pairs).items():
                self._metrics["eval"][key] = [value]
        super().log(logs, start_time)

    def evaluate(self, *args, **kwargs):
        self._eval_pairs = []
        result = super().evaluate(*args, **kwargs)
        if self.last_eval_scores is not None and self.is_world_process_zero():
            path = Path(self.args.output_dir) / "eval_scores.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"chosen": c, "rejected": r}) + "\n"
                                    for c, r in self.last_eval_scores.tolist()))
        return result


def _to_reward_columns(row: dict) -> dict:
    chosen, rejected = reward_pair(row)
    out = {"chosen_ids": chosen, "rejected_ids": rejected}
    if "margin" in row:
        out["margin"] = float(row["margin"] or 0.0)  # rows of a mixed set without one get 0
    return out


def pair_metrics(pairs: torch.Tensor) -> dict[str, float]:
    """rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins of [n, 2] (chosen, rejected) rewards."""
    chosen, rejected = pairs[:, 0], pairs[:, 1]
    return {"rewards/chosen": chosen.mean().item(), "rewards/rejected": rejected.mean().item(),
            "rewards/accuracies": preference_accuracy(chosen, rejected).item(),
            "rewards/margins": (chosen - rejected).mean().item()}


def ensure_pad_token(model, tokenizer, say=print) -> bool:
    """Give the tokenizer a pad token distinct from EOS; returns True when it changed.

    A reward model reads its head at the last token that is not the pad token; with pad == EOS that
    is the token before the final EOS, and sequences that differ only there score the same. An existing
    token is used where there is one (the model config's pad id, the tokenizer's unk token, or a special token
    named for padding such as Llama 3.1's <|finetune_right_pad_id|>), so the embeddings keep their size and a LoRA run folder
    loads on its base in plain transformers; only a tokenizer with neither gets a new token and resized
    embeddings.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        model.config.pad_token_id = tokenizer.pad_token_id
        return False
    old = tokenizer.pad_token
    configured = model.config.pad_token_id  # the base's own pad id: plain transformers loading a LoRA run reads it
    named_pad = [t for t in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab())
                 if "pad" in t.lower() and tokenizer.convert_tokens_to_ids(t) != eos]
    if configured is not None and configured != eos and configured < len(tokenizer):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(configured)
        how = f"pads with the pad token of the model's config, {tokenizer.pad_token!r}"
    elif tokenizer.unk_token is not None and tokenizer.unk_token_id != eos:
        tokenizer.pad_token = tokenizer.unk_token
        how = f"pads with its unk token {tokenizer.unk_token!r}"
    elif named_pad:
        tokenizer.pad_token = named_pad[0]
        how = f"pads with its token {named_pad[0]!r}"
    else:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        how = (f"added {PAD_TOKEN!r} (id {tokenizer.pad_token_id}) and resized the embeddings (a LoRA run then loads "
               "with peft's AutoPeftModelForSequenceClassification or after `rlhfx export --merge_lora`)")
    say(f"note: the tokenizer's pad token {old!r} is its EOS token (or missing); rlhfx rm {how}, so that rewards "
        "are read at the right token.")
    model.config.pad_token_id = tokenizer.pad_token_id
    return True


def zero_new_head(model, say=print) -> bool:
    """Start a head that the checkpoint did not have (a causal LM loaded as a reward model) at zero.

    Every pair then ties: the held-out accuracy starts at chance (0.5) and the loss at log 2, instead
    of wherever a random projection of the features happens to land. A trained reward model keeps its head.
    """
    if any(name.endswith("ForSequenceClassification") for name in model.config.architectures or []):
        return False
    import torch

    with torch.no_grad():
        for parameter in model.score.parameters():
            parameter.zero_()
    say("note: the reward head is new; it starts at zero (every pair ties before training).")
    return True


def build_trainer(ctx):
    from rlhfx.training.runner import say

    ensure_pad_token(ctx.model, ctx.tokenizer, say)
    zero_new_head(ctx.model, say)
    peft_config = ctx.peft_config
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"
        peft_config.modules_to_save = ["score"]
    config = RewardConfig(**ctx.hf_args, max_length=ctx.args.max_length)
    return RlhfxRewardTrainer(
        model=ctx.model, args=config, train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
        processing_class=ctx.tokenizer, peft_config=peft_config, callbacks=ctx.callbacks,
        packing=ctx.args.packing_samples)
