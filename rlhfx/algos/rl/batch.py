"""A rollout batch's layout and the forward passes both stages share.

Prompts left padded to one width P, responses right padded after them, so response token t sits at column P + t
for every row; per-token tensors are [samples, response_len] with a mask of real response tokens. Log-probs use
logits / temperature (the distribution sampled from). With --packing_samples (`packed`) the forwards read only the
real tokens: every row's laid end to end in one row, positions restarting at 0 per sequence and no attention mask,
which transformers turns into a block-diagonal causal mask (sdpa, eager) or varlen kernels (FlashAttention); their
outputs are put back in the padded layout (zeros at padding), so the rest of the code sees the same tensors.
"""

import torch


def layout(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, device, loss_masks=None,
           packed: bool = False) -> dict:
    """The batch; `loss_masks[i]` (multi-turn: 1 on the tokens the model generated) narrows row i's mask, None keeps
    every response token; `packed` (--packing_samples): its forwards run padding-free."""
    width, length = max(map(len, prompt_ids)), max(map(len, response_ids))
    loss_masks = loss_masks or [None] * len(prompt_ids)
    ids = torch.full((len(prompt_ids), width + length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(prompt_ids), length))
    for i, (p, r, m) in enumerate(zip(prompt_ids, response_ids, loss_masks)):
        ids[i, width - len(p) : width + len(r)] = torch.tensor(p + r)
        attention[i, width - len(p) : width + len(r)] = 1
        mask[i, : len(r)] = 1 if m is None else torch.tensor(m, dtype=mask.dtype)
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device), "mask": mask.to(device), "width": width,
            "packed": packed}


def select(batch: dict, indices: list[int]) -> dict:
    """The rows `indices` of every per-sample tensor (the shared prompt width is kept)."""
    index = torch.tensor(indices, device=batch["mask"].device)
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def inputs(micro: dict) -> dict:
    """What a model's forward takes for the rows of `micro` (the response span: `width`, `length`)."""
    return {"input_ids": micro["input_ids"], "attention_mask": micro["attention_mask"], "width": micro["width"],
            "length": micro["mask"].shape[1], "packed": micro["packed"]}


def response_span(forward, input_ids, attention_mask, width: int, length: int, packed: bool) -> torch.Tensor:
    """`forward(input_ids=, attention_mask=, position_ids=)`'s per-position outputs [rows, columns, ...] at the
    positions that predict each response token (columns width - 1 ..). Packed, it runs on one row of the real tokens
    and its outputs are scattered back, zeros at padding."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    span = slice(width - 1, width + length - 1)
    if not packed:
        return forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)[:, span]
    real = attention_mask.bool()
    out = forward(input_ids=input_ids[real][None], attention_mask=None, position_ids=positions[real][None])[0]
    at = (real.flatten().cumsum(0) - 1).view_as(real)[:, span]  # each position's index in the packed row
    read = out.new_zeros(*at.shape, *out.shape[1:])
    read[real[:, span]] = out[at[real[:, span]]]
    return read


def response_logits(model, input_ids, attention_mask, width: int, length: int, packed: bool = False) -> torch.Tensor:
    """The logits that predict each response token."""
    return response_span(lambda **kw: model(**kw, use_cache=False).logits, input_ids, attention_mask, width, length,
                         packed).float()


def response_values(critic, input_ids, attention_mask, width: int, length: int, packed: bool = False) -> torch.Tensor:
    """The critic (a one-label sequence classifier read at every position: its backbone's hidden states through its
    `score` head); V_t is read at the position before response token t."""
    inner = critic.get_base_model() if hasattr(critic, "get_base_model") else critic
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = response_span(lambda **kw: backbone(**kw, use_cache=False).last_hidden_state, input_ids, attention_mask,
                           width, length, packed)
    # a LoRA critic trains a float32 copy of its head over a bf16 backbone (PEFT); only a GPU's autocast bridges them
    head = [p for p in inner.score.parameters() if p.requires_grad] or list(inner.score.parameters())
    return inner.score(hidden.to(head[0].dtype)).squeeze(-1).float()


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
