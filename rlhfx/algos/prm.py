"""`--rlhf_type prm`: a process reward model, OpenRLHF style, on a small transformers Trainer (TRL has none).

Data: `process` rows, a prompt plus reasoning steps with one label per step (1 good, 0 bad, or a soft
label in [0, 1]). Each step is followed by the placeholder token (`--placeholder_token`, default
`<|step|>`, added to the tokenizer and the embeddings when missing), and the model's output at every
placeholder position is that step's score:

- `--reward_tokens GOOD BAD` (e.g. `+ -`, OpenRLHF): the model stays a causal LM; its logits of the two
  reward tokens at the placeholder position are the step's (good, bad) logits. Loss: cross-entropy over
  those two tokens against (p, 1 - p), i.e. the ordinary cross-entropy for hard labels and the soft one
  for soft labels. The output folder loads with AutoModelForCausalLM.
- no `--reward_tokens` (binary head): the causal LM's body gets a one-label token-classification head
  (AutoModelForTokenClassification(num_labels=1), the `score` Linear); its scalar s at the placeholder
  position gives P(good) = sigma(s), trained with the same loss (s plays l_good - l_bad). The output
  folder loads with AutoModelForTokenClassification(num_labels=1).

Only placeholder positions carry loss; the loss is the mean over all steps of the batch (`prm_loss`).
Metrics: loss, `step_accuracy` (predicted P(good) > 0.5 vs label > 0.5; held-out, over the whole
validation set), `rewards/good` and `rewards/bad` (mean P(good) of good- and bad-labelled steps).
Under LoRA the new head (binary) is trained and saved in full; when the placeholder was added, PEFT saves
the resized embeddings with the adapter (peft's AutoPeftModel* resize the base to the saved tokenizer).
"""

import copy
from collections import defaultdict

import torch
from transformers import Trainer, TrainingArguments

from rlhfx.algos.losses import prm_loss
from rlhfx.errors import RlhfxError
from rlhfx.rewards.score import step_logits

IGNORE = -100.0


class ProcessCollator:
    """Right-padded prompt + (step, placeholder)* sequences; `step_labels` holds each step's label at its
    placeholder position and IGNORE everywhere else."""

    def __init__(self, pad_token_id: int, placeholder_id: int):
        self.pad_token_id = pad_token_id
        self.placeholder_id = placeholder_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences, targets = [], []
        for example in examples:
            ids, labels = list(example["prompt_ids"]), [IGNORE] * len(example["prompt_ids"])
            for step, label in zip(example["step_ids"], example["labels"]):
                ids += list(step) + [self.placeholder_id]
                labels += [IGNORE] * len(step) + [float(label)]
            sequences.append(ids)
            targets.append(labels)
        width = max(len(s) for s in sequences)
        batch = {"input_ids": torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(sequences), width), dtype=torch.long),
                 "step_labels": torch.full((len(sequences), width), IGNORE, dtype=torch.float)}
        for i, (ids, labels) in enumerate(zip(sequences, targets)):
            batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
            batch["attention_mask"][i, : len(ids)] = 1
            batch["step_labels"][i, : len(ids)] = torch.tensor(labels)
        return batch


class RlhfxPRMTrainer(Trainer):
    """Trainer whose loss is `prm_loss` at the placeholder positions; exact held-out step accuracy."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean: the Trainer divides by GA steps

    def __init__(self, *args, reward_token_ids: list[int] | None, **kwargs):
        self.reward_token_ids = reward_token_ids
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_steps: list[torch.Tensor] = []
        super().__init__(*args, **kwargs)
        self.can_return_loss = True  # evaluation calls compute_loss although the batch has no `labels`
        self.label_names = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        mask = inputs["step_labels"] != IGNORE
        logits = step_logits(model, inputs["input_ids"], inputs["attention_mask"], mask, self.reward_token_ids)
        labels = inputs["step_labels"][mask]
        losses, good = prm_loss(logits, labels)
        loss = losses.mean()
        # per-row sums (gather_for_metrics trims the last batch by rows, so gather row-shaped tensors)
        stats = self.accelerator.gather_for_metrics(row_stats(good, labels, mask))
        if mode == "eval":
            self._eval_steps.append(stats.cpu())
        else:
            for key, value in step_metrics(stats).items():
                self._metrics[mode][key].append(value)
        return (loss, {"good_probs": good}) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        self._eval_steps = []
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        if mode == "eval" and self._eval_steps:
            metrics = step_metrics(torch.cat(self._eval_steps))
            self._eval_steps = []
        else:
            metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + key: value for key, value in metrics.items()})
        self._metrics[mode].clear()
        super().log(logs, start_time)


def row_stats(good: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[rows, 5] per-row sums over its steps: steps, right predictions, good-labelled steps, P(good) summed
    over those, P(good) summed over the bad-labelled ones. `good`/`labels` are in `mask`'s row-major order."""
    rows = mask.nonzero()[:, 0]
    is_good = (labels > 0.5).float()
    right = ((good > 0.5) == (labels > 0.5)).float()
    columns = [torch.ones_like(good), right, is_good, good * is_good, good * (1 - is_good)]
    stats = torch.zeros(mask.shape[0], len(columns), device=good.device)
    return stats.index_add_(0, rows, torch.stack(columns, dim=-1).detach().float())


def step_metrics(stats: torch.Tensor) -> dict[str, float]:
    """step_accuracy (the share of steps predicted right, as `step_accuracy` defines it), rewards/good and
    rewards/bad (mean P(good) of good- and bad-labelled steps) from `row_stats` rows."""
    steps, right, n_good, good_sum, bad_sum = stats.sum(0).tolist()
    out = {"step_accuracy": right / max(steps, 1)}
    if n_good:
        out["rewards/good"] = good_sum / n_good
    if steps - n_good:
        out["rewards/bad"] = bad_sum / (steps - n_good)
    return out


def token_id(tokenizer, token: str, flag: str) -> int:
    """The id of `token` when it is a single token of the vocabulary, else a clear error."""
    token_id_ = tokenizer.convert_tokens_to_ids(token)
    if token_id_ is None or token_id_ == tokenizer.unk_token_id:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RlhfxError(f"{flag} {token!r} is not a single token of this tokenizer (it is {len(ids)} tokens).",
                             "pick tokens the tokenizer has, e.g. `--reward_tokens + -`.")
        token_id_ = ids[0]
    return token_id_


def add_placeholder(model, tokenizer, token: str, say=print) -> int:
    """The placeholder's id; a missing placeholder is added as a special token and the embeddings resized."""
    if token in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(token)
    tokenizer.add_tokens([token], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    say(f"note: added the step placeholder {token!r} to the tokenizer (id {tokenizer.convert_tokens_to_ids(token)}) "
        "and resized the embeddings.")
    return tokenizer.convert_tokens_to_ids(token)


def token_classifier(causal_lm):
    """The causal LM's body under a fresh one-label token-classification head (the binary PRM head)."""
    from transformers import AutoModelForTokenClassification

    config = copy.deepcopy(causal_lm.config)
    config.num_labels, config.architectures = 1, None
    try:
        model = AutoModelForTokenClassification.from_config(config)
    except ValueError:
        raise RlhfxError(f"{type(causal_lm).__name__} has no token-classification variant for the binary PRM head.",
                         "pass --reward_tokens (e.g. + -) to train the causal LM on two reward tokens.") from None
    missing, _ = model.load_state_dict(causal_lm.state_dict(), strict=False)
    if any(not name.startswith("score.") for name in missing):
        raise RlhfxError(f"Could not move the weights of {type(causal_lm).__name__} under a token-classification head.",
                         "pass --reward_tokens (e.g. + -) to train the causal LM on two reward tokens instead.")
    return model.to(causal_lm.dtype)


def reward_token_ids(reward_tokens: list[str] | None, tokenizer) -> list[int] | None:
    """The ids of the two --reward_tokens (their count is checked by PRMOptions before anything loads)."""
    if not reward_tokens:
        return None
    ids = [token_id(tokenizer, token, "--reward_tokens") for token in reward_tokens]
    if ids[0] == ids[1]:
        raise RlhfxError(f"--reward_tokens {reward_tokens} are the same token.", "give two different tokens.")
    return ids


def build_trainer(ctx):
    from rlhfx.training.runner import say

    args, options, tokenizer = ctx.args, ctx.options, ctx.tokenizer
    reward_ids = reward_token_ids(options.reward_tokens, tokenizer)
    placeholder_id = add_placeholder(ctx.model, tokenizer, options.placeholder_token, say)
    if placeholder_id in (reward_ids or []):
        raise RlhfxError(f"--placeholder_token {options.placeholder_token!r} is also one of --reward_tokens.",
                         "use a dedicated placeholder such as <|step|>.")
    model = ctx.model if reward_ids else token_classifier(ctx.model)
    model.config.pad_token_id = tokenizer.pad_token_id
    for module in model.modules():  # deterministic step scores, as TRL's reward trainer does
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if ctx.peft_config is not None:
        from peft import get_peft_model

        if reward_ids is None:
            ctx.peft_config.task_type, ctx.peft_config.modules_to_save = "TOKEN_CLS", ["score"]
        model = get_peft_model(model, ctx.peft_config)
        if args.gradient_checkpointing:
            model.enable_input_require_grads()
    # our columns are not forward() arguments; evaluation needs only the loss and the metrics gathered above
    config = TrainingArguments(**ctx.hf_args, remove_unused_columns=False, prediction_loss_only=True)
    return RlhfxPRMTrainer(
        model=model, args=config, data_collator=ProcessCollator(tokenizer.pad_token_id, placeholder_id),
        train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset, processing_class=tokenizer,
        callbacks=ctx.callbacks, reward_token_ids=reward_ids)
