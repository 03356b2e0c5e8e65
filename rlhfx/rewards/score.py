"""Reading scores out of rlhfx reward models, the same way in training, evaluation and downstream use.

Outcome reward model (`--rlhf_type rm`): a sequence-classification model with one label. The reward
of a sequence is the scalar head read at its last non-pad token, which is exactly what
`AutoModelForSequenceClassification(...)(input_ids).logits` returns when `config.pad_token_id` is set
(and differs from EOS). Sequences are right padded here.

Process reward model (`--rlhf_type prm`): at every placeholder-token position, either the logits of
the two reward tokens (good, bad) of a causal LM, or the scalar of a one-label token-classification
head (the binary formulation). P(step is good) = softmax over the pair / sigmoid of the scalar.
"""

import torch


def reward_pair(row: dict) -> tuple[list[int], list[int]]:
    """Full prompt+chosen and prompt+rejected token ids of an rlhfx-encoded pairwise row."""
    return row["prompt_ids"] + row["chosen_ids"], row["prompt_ids"] + row["rejected_ids"]


def right_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right padded to the longest sequence."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch] rewards: the model's scalar head at each sequence's last non-pad token."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.squeeze(-1)


@torch.no_grad()
def score_sequences(model, pad_token_id: int, sequences: list[list[int]], batch_size: int = 16) -> list[float]:
    """Rewards of token-id sequences (prompt + response each), in order."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = right_pad(sequences[start : start + batch_size], pad_token_id)
        scores += sequence_rewards(model, ids.to(device), mask.to(device)).float().cpu().tolist()
    return scores


def score_pairs(model, pad_token_id: int, rows: list[dict], batch_size: int = 16) -> list[tuple[float, float]]:
    """(chosen reward, rejected reward) for each rlhfx-encoded pairwise row (prompt_ids, chosen_ids, rejected_ids)."""
    was_training = model.training
    model.eval()
    full = [reward_pair(row) for row in rows]
    chosen = score_sequences(model, pad_token_id, [c for c, _ in full], batch_size)
    rejected = score_sequences(model, pad_token_id, [r for _, r in full], batch_size)
    model.train(was_training)
    return list(zip(chosen, rejected))


def step_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, step_mask: torch.Tensor,
                reward_token_ids: list[int] | None = None) -> torch.Tensor:
    """Logits at the step positions (`step_mask`, usually `input_ids == placeholder_id`), in reading order.

    With reward_token_ids (good, bad) the model is a causal LM and the result is [n, 2]: its logits of
    those two tokens. Without, it is a one-label token classifier and the result is [n].
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    at_steps = logits[step_mask]
    if reward_token_ids is None:
        return at_steps[:, 0]
    return at_steps[:, reward_token_ids]


def good_probability(step_logits_: torch.Tensor) -> torch.Tensor:
    """P(step is good) from `step_logits`' output: softmax over (good, bad), or sigmoid of the binary head."""
    if step_logits_.dim() == 1:
        return torch.sigmoid(step_logits_.float())
    return torch.softmax(step_logits_.float(), dim=-1)[:, 0]
