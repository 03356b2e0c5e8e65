"""A rollout batch's layout and the forward passes both stages share.

Prompts left padded to one width P, responses right padded after them, so response token t sits at column P + t
for every row; per-token tensors are [samples, response_len] with a mask of real response tokens. Log-probs use
logits / temperature (the distribution sampled from).
"""

import torch


def layout(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, device, loss_masks=None) -> dict:
    """The batch; `loss_masks[i]` (multi-turn: 1 on the tokens the model generated) narrows row i's mask, None keeps
    every response token."""
    width, length = max(map(len, prompt_ids)), max(map(len, response_ids))
    loss_masks = loss_masks or [None] * len(prompt_ids)
    ids = torch.full((len(prompt_ids), width + length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(prompt_ids), length))
    for i, (p, r, m) in enumerate(zip(prompt_ids, response_ids, loss_masks)):
        ids[i, width - len(p) : width + len(r)] = torch.tensor(p + r)
        attention[i, width - len(p) : width + len(r)] = 1
        mask[i, : len(r)] = 1 if m is None else torch.tensor(m, dtype=mask.dtype)
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "mask": mask.to(device), "width": width}


def select(batch: dict, indices: list[int]) -> dict:
    """The rows `indices` of every per-sample tensor (the shared prompt width is kept)."""
    index = torch.tensor(indices, device=batch["mask"].device)
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def inputs(micro: dict) -> dict:
    """What a model's forward takes for the rows of `micro` (the response span: `width`, `length`)."""
    return {"input_ids": micro["input_ids"], "attention_mask": micro["attention_mask"], "width": micro["width"],
            "length": micro["mask"].shape[1]}


def response_logits(model, input_ids, attention_mask, width: int, length: int) -> torch.Tensor:
    """The logits that predict each response token."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
    return out.logits[:, width - 1 : width + length - 1].float()


def response_values(critic, input_ids, attention_mask, width: int, length: int) -> torch.Tensor:
    """The critic (a one-label sequence classifier read at every position: its backbone's hidden states through its
    `score` head); V_t is read at the position before response token t."""
    inner = critic.get_base_model() if hasattr(critic, "get_base_model") else critic
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = getattr(inner, inner.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask,
                                                      position_ids=positions, use_cache=False).last_hidden_state
    return inner.score(hidden[:, width - 1 : width + length - 1]).squeeze(-1).float()


def token_logp(logits: torch.Tensor, micro: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per response token: log-prob of the sampled token, and the logits / temperature it came from."""
    width, length = micro["width"], micro["mask"].shape[1]
    logits = logits / max(temperature, 1e-6)
    tokens = micro["input_ids"][:, width : width + length]
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return logp * micro["mask"], logits


class ActorCritic(torch.nn.Module):
    """The trained models together (the critic None without one), as the rollout stage and the loop hold them; the
    update stage prepares each on its own (rlhfx.algos.rl.update.Role)."""

    def __init__(self, policy, critic=None):
        super().__init__()
        self.policy, self.critic = policy, critic
