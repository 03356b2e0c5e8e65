"""The update stage: `num_ppo_epochs` passes over a rollout's samples in optimizer batches, on accelerate.

The policy and the critic are each prepared by accelerate on their own, with their own optimizer and scheduler:
plain, DDP, or a DeepSpeed ZeRO engine each (--deepspeed zero2 | zero3 | *_offload), so each is clipped to
--max_grad_norm on its own, as in one process and as OpenRLHF's separate engines (one engine over both would clip
their joint norm). Each rank's optimizer batch is its `--batch_size` x gradient accumulation samples, so the
global batch is --train_batch_size as offline. Every loss term is a share of the global batch's loss (normalised
by the token and sequence counts summed over the ranks), and since DDP and DeepSpeed average gradients over the
ranks, each rank back-propagates its share times the world size: the gradient equals one process's on the whole
batch. The policy's loss (policy, KL and entropy terms) and the critic's (the value loss) are back-propagated each
through its own model. A NaN/inf loss or gradient norm stops the run before the weights change.
"""

import torch
from accelerate.utils import DistributedType

from rlhfx.algos import rl_math
from rlhfx.algos.rl.batch import inputs, response_logits, response_values, select, token_logp
from rlhfx.training.checkpoints import newest_checkpoint
from rlhfx.training.guards import non_finite_error

SHARE_STATS = ("policy_loss", "kl_loss", "value_loss", "entropy")  # summed over an optimizer batch's micro batches


def deepspeed_plugin(args, micro_batch: int, world: int, hidden_size: int, bf16: bool):
    """--deepspeed's config with its "auto" fields filled as the Trainer fills them, for a loop that feeds DeepSpeed
    one micro batch at a time and marks the accumulation boundary itself (so DeepSpeed's own count is 1)."""
    from accelerate import DeepSpeedPlugin

    from rlhfx.training.scale import deepspeed_config

    config = deepspeed_config(args.deepspeed)
    config.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=1,
                  train_batch_size=micro_batch * world, gradient_clipping=args.max_grad_norm,
                  bf16={"enabled": bf16}, fp16={"enabled": False})
    sizes = {"reduce_bucket_size": hidden_size * hidden_size,
             "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
             "stage3_param_persistence_threshold": 10 * hidden_size}
    zero = config.setdefault("zero_optimization", {})
    zero.update({key: value for key, value in sizes.items() if zero.get(key) == "auto"})
    return DeepSpeedPlugin(hf_ds_config=config)


class Role(torch.nn.Module):
    """One trained model (the policy or the critic) under its name, so its wrapper (DDP, a DeepSpeed engine) sees
    the forward that reads it (response logits or values) and its state dict keys keep the "policy." / "critic."
    prefix."""

    def __init__(self, name: str, model, read):
        super().__init__()
        self.name, self.read = name, read
        self.add_module(name, model)

    def forward(self, input_ids, attention_mask, width: int, length: int, packed: bool = False) -> torch.Tensor:
        return self.read(getattr(self, self.name), input_ids, attention_mask, width, length, packed)


class UpdateStage:
    """Trains the models `actor_critic` holds: both in one loop over one shuffle (one process, torchrun), or one of
    them (under Ray the actor group holds the policy alone and the critic group the critic alone: the same loop and
    losses, each group shuffling as the driver says, rlhfx.algos.rl.ray.cluster)."""

    def __init__(self, accelerator, ranks, actor_critic, config, args, learning_rate: float, critic_learning_rate: float,
                 total_updates: int, kl, autocast, output_dir, chord=None):
        """chord: rlhfx.algos.rl.chord.Chord with --chord_sft_dataset, else None."""
        self.accelerator, self.ranks, self.config, self.args = accelerator, ranks, config, args
        self.kl, self.autocast, self.output_dir, self.chord = kl, autocast, output_dir, chord
        self.micro_batch = args.batch_size
        roles = [("policy", actor_critic.policy, response_logits, learning_rate),
                 ("critic", actor_critic.critic, response_values, critic_learning_rate)]
        prepared = {name: self._prepare(Role(name, model, read), lr, total_updates)
                    for name, model, read, lr in roles if model is not None}
        self.policy, self.critic = (prepared[name][0] if name in prepared else None for name in ("policy", "critic"))
        self.models, self.optimizers, self.schedulers = (list(column) for column in zip(*prepared.values()))
        self.scheduler = self.schedulers[0]  # the policy's (the critic's in the critic group): the logged rate

    def _prepare(self, role: Role, learning_rate: float, total_updates: int):
        """The model with its AdamW and scheduler, prepared by accelerate (a DeepSpeed engine of its own under ZeRO:
        accelerate prepares one DeepSpeed model per call and saves each engine's state in its own folder)."""
        from transformers import get_scheduler

        params = [p for p in role.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=self.args.weight_decay)
        scheduler = get_scheduler(self.args.lr_scheduler_type, optimizer, num_training_steps=total_updates,
                                  num_warmup_steps=int(self.args.warmup_ratio * total_updates))
        model, optimizer = self.accelerator.prepare(role, optimizer)
        self.accelerator.register_for_checkpointing(scheduler)
        return model, optimizer, scheduler

    def update(self, batch: dict, train_batch: int, step: int, orders: list[list[int]] | None = None) -> dict:
        """`train_batch`: this rank's optimizer batch. Every rank holds as many samples, so all take the same number
        of optimizer steps and micro steps. `orders`: each epoch's order of the samples (default: shuffled here)."""
        n, totals, group = batch["mask"].shape[0], {}, shuffled_group(self.config)
        for model in self.models:
            _train_without_dropout(model)
        for epoch in range(self.config.num_ppo_epochs):
            order = orders[epoch] if orders else shuffle(n, self.config)
            for start in range(0, n, train_batch):
                indices = order[start : start + train_batch]
                parts = [indices[i : i + self.micro_batch] for i in range(0, len(indices), self.micro_batch)]
                mask = batch["mask"][indices]  # the global optimizer batch's totals normalise every micro batch's loss
                counts = self.ranks.sum(torch.stack([mask.sum(), (mask.sum(1) > 0).sum().to(mask.dtype),
                                                     torch.tensor(len(indices) / group, device=mask.device)]))
                counts = {"n_tokens": counts[0].clamp(min=1), "n_sequences": counts[1].clamp(min=1),
                          "n_groups": counts[2]}
                shares = {}
                for i, part in enumerate(parts):
                    losses, stats = self.loss(select(batch, part), counts, 1 / (len(parts) * self.ranks.world))
                    if not all(torch.isfinite(loss) for loss in losses):
                        raise self._non_finite(step, "The loss became NaN/inf (the update was not applied)")
                    for model, loss in zip(self.models, losses):
                        self._backward(model, loss * self.ranks.world, last=i == len(parts) - 1)
                    for key, value in stats.items():
                        if key in SHARE_STATS:
                            shares[key] = shares.get(key, 0.0) + value * self.ranks.world
                        else:
                            totals.setdefault(key, []).append(value)
                self.optimizer_step(step)
                for key, value in shares.items():
                    totals.setdefault(key, []).append(value)
        for model in self.models:
            model.eval()
        return {key: self.ranks.mean(sum(values) / len(values)) for key, values in totals.items()}

    def loss(self, micro: dict, counts: dict, sft_share: float = 1.0) -> tuple[list[torch.Tensor], dict]:
        """One micro batch's share of the optimizer batch's loss of each trained model, in the order of
        `self.models` (`counts`: that batch's tokens, sequences and (REAL) groups over all ranks)."""
        losses, stats = [], {}
        if self.policy is not None:
            losses.append(self.policy_loss(micro, counts, sft_share, stats))
        if self.critic is not None:
            with self.autocast():
                values = self.critic(**inputs(micro))
            value_loss = rl_math.value_loss(values, micro["values"], micro["returns"], micro["mask"],
                                            self.config.cliprange_value, counts["n_tokens"])
            stats["value_loss"] = value_loss.item()
            losses.append(self.config.vf_coef * value_loss)
        return losses, stats

    def policy_loss(self, micro: dict, counts: dict, sft_share: float, stats: dict) -> torch.Tensor:
        """The policy's loss under --loss_agg_mode: policy loss, KL loss term, entropy bonus; with CHORD (1 - mu) times
        that plus mu times `sft_share` of an expert batch's SFT loss. Its statistics go into `stats`."""
        config, mask = self.config, micro["mask"]
        agg = {"n_tokens": counts["n_tokens"], "n_sequences": counts["n_sequences"]}
        logp, logits = self.forward(micro)
        if config.loss_type == "real":
            out = {"loss": rl_math.real_loss(logp, micro["old_logp"], micro["advantages"], mask,
                                             config.n_samples_per_prompt, config.real_tau, counts.get("n_groups"))}
        else:
            out = rl_math.policy_loss(logp, micro["old_logp"], micro["advantages"], mask, config.cliprange,
                                      config.cliprange_high, config.dual_clip,
                                      "sequence" if config.policy_loss == "gspo" else "token", config.loss_agg_mode,
                                      weights=micro.get("is_weights"), sapo=self._sapo(), fipo=self._fipo(), **agg)
        entropy = rl_math.entropy(logits, mask, counts["n_tokens"])
        loss = out["loss"] - config.entropy_coef * entropy
        stats.update(policy_loss=out.pop("loss").item(), entropy=entropy.item(),
                     **{key: value.item() for key, value in out.items()})
        if config.use_kl_loss:
            kl = rl_math.kl_per_token(logp, micro["ref_logp"], config.kl_estimator, mask,
                                      micro["old_logp"] if config.kl_unbiased_gradient else None)
            kl_loss = rl_math.aggregate(kl, mask, config.loss_agg_mode, **agg)
            loss = loss + self.kl.value * kl_loss
            stats["kl_loss"] = kl_loss.item()
        if self.chord is not None:
            loss = self._chord(loss, stats, sft_share)
        return loss

    def forward(self, micro: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, logits / temperature) of the response tokens through the prepared (DDP / DeepSpeed) policy."""
        with self.autocast():
            logits = self.policy(**inputs(micro))
        return token_logp(logits, micro, self.config.temperature)

    def _sapo(self) -> tuple[float, float] | None:
        return (self.config.tau_pos, self.config.tau_neg) if self.config.loss_type == "sapo" else None

    def _fipo(self) -> dict | None:
        config = self.config
        if config.loss_type != "fipo":
            return None
        return {"decay_rate": config.fipo_decay_rate, "clip_range": config.fipo_clip_range,
                "clip_high_only": config.fipo_clip_high_only, "safety_threshold": config.fipo_safety_threshold}

    def _chord(self, loss: torch.Tensor, stats: dict, sft_share: float) -> torch.Tensor:
        """(1 - mu) x the policy's loss + mu x the SFT loss of the next expert batch, weighed by `sft_share`: each
        micro batch's expert batch is averaged over the optimizer batch's micro batches and the ranks (as ms-swift's
        per micro batch loss, averaged over gradient accumulation and DDP). mu follows the optimizer steps taken
        (the scheduler's count, which a resume restores); with mu = 0 no expert batch is drawn."""
        mu = stats["chord_mu"] = self.chord.mu(self.scheduler.last_epoch)
        if mu == 0:
            return loss
        with self.autocast():
            sft = self.chord.loss(self.policy, self.accelerator.device)
        stats["chord_sft_loss"] = sft.item()  # the mean of the micro steps that drew an expert batch
        return (1 - mu) * loss + mu * sft_share * sft

    def _backward(self, model, loss: torch.Tensor, last: bool) -> None:
        """A DeepSpeed engine is told where the optimizer batch ends (it clips and steps there); elsewhere gradients
        add up."""
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            self.accelerator.backward(loss)
            return
        model.set_gradient_accumulation_boundary(is_boundary=last)
        model.backward(loss)
        if last:
            model.step()

    def optimizer_step(self, step: int) -> None:
        """Clip each model to --max_grad_norm on its own and step; a NaN/inf gradient norm stops the run before the
        weights change, as the offline trainers' NonFiniteGuard does (each DeepSpeed engine clipped and stepped in
        `_backward` already)."""
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            for model in self.models:
                norm = self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
                if not torch.isfinite(norm):
                    raise self._non_finite(step, "The loss or its gradients became NaN/inf (the update was not applied)")
        for optimizer, scheduler in zip(self.optimizers, self.schedulers):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

    def _non_finite(self, step: int, what: str):
        return non_finite_error(step + 1, self.models[0], self.scheduler.get_last_lr()[0],
                                newest_checkpoint(self.output_dir), what)


def shuffled_group(config) -> int:
    """The samples shuffled together: REAL compares each prompt's samples, so its groups are shuffled whole (batch
    sizes are multiples of the group); one sample otherwise."""
    return config.n_samples_per_prompt if config.loss_type == "real" else 1


def shuffle(n: int, config, generator: torch.Generator | None = None) -> list[int]:
    """One epoch's order of `n` samples (drawn from the global random state unless `generator` is given)."""
    group = shuffled_group(config)
    return (torch.randperm(n // group, generator=generator)[:, None] * group + torch.arange(group)).flatten().tolist()


def _train_without_dropout(model) -> None:
    """Train mode (so gradient checkpointing applies) with every dropout layer off: the update's log-probs are
    computed as the rollout's were, and the ratio starts at exactly 1."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
