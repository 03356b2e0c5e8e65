"""The online RL loop: rollout with the generation engine -> rewards -> advantages -> PPO updates.

One step = one rollout of `rollout_batch_size` prompts x `n_samples_per_prompt` responses, then
`num_ppo_epochs` passes over those samples in optimizer batches of `batch_size` x gradient
accumulation. It offers what the runner uses of a Hugging Face Trainer (evaluate, train,
save_model, model), so the run's outputs are the same as every other algorithm's.

Layout of a rollout: prompts left padded to one width P, responses right padded after them, so
response token t sits at column P + t for every row; per-token tensors are [samples, response_len]
with a mask of real response tokens. Log-probs use logits / temperature (the distribution sampled
from). Dropout (LoRA's included) is off throughout, so the ratio is exactly 1 on the first pass.

The critic (gae only) is a one-label sequence classifier read at every position: its backbone's
hidden states through its `score` head; V_t is read at the position before response token t.
It defaults to the first reward model (as OpenRLHF), else --model with a new zero head.

Rollouts run on the `pt` engine (the policy itself) or `vllm` (weights pushed before each generation,
a LoRA adapter merged in). Checkpoints (`checkpoint-N/`: the policy in Hugging Face format plus
`rl_state.pt` with trainable weights, optimizers, schedulers, KL coefficient, reward statistics, step
and RNG states; the data position follows from the step) let `--resume_from_checkpoint` (resolved
by the runner, which also rewinds metrics.jsonl) continue exactly where the run was.
"""

import json
import math
import random
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from rlhfx.algos import rl_math
from rlhfx.engines import Sampling, stop_token_ids
from rlhfx.errors import RlhfxError
from rlhfx.rewards.sources import RewardSources, Sample
from rlhfx.training.callbacks import plain_line
from rlhfx.training.checkpoints import (STAGING, TRAINER_STATE, disk_full_error, is_disk_full, newest_checkpoint,
                                        publish, rotate)
from rlhfx.training.guards import StopOnSignal, check_finite_weights, non_finite_error
from rlhfx.training.hf_args import gradient_accumulation, world_size
from rlhfx.training.runner import say
from rlhfx.training.tracking import LoopTrackers, trackers


STATE = "rl_state.pt"


class OnlineRLTrainer:
    def __init__(self, ctx, config):
        if world_size() > 1:
            raise RlhfxError("Online RL (ppo, grpo, rloo, reinforce_pp) runs on one process in this version.",
                             "launch it without NPROC_PER_NODE.")
        self.args, self.config, self.tokenizer = ctx.args, config, ctx.tokenizer
        self.output_dir = Path(ctx.hf_args["output_dir"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.train_rows = _prompt_rows(ctx.train_dataset, self.args.prompt_max_len, "train")
        self.eval_rows = _prompt_rows(ctx.eval_dataset, self.args.prompt_max_len, "val") if ctx.eval_dataset else []
        if len(self.train_rows) < config.rollout_batch_size:
            raise RlhfxError(f"--rollout_batch_size {config.rollout_batch_size} is more than the {len(self.train_rows)} "
                             "training prompts.", "lower --rollout_batch_size or add prompts.")
        self.model = self._policy(ctx)
        self.ref_model = ctx.ref_model.to(self.device) if ctx.ref_model is not None else None
        self.critic = self._critic() if config.uses_critic else None
        self.rewards = RewardSources(
            self.args.reward_model or [], self.args.reward_func or [], self.args.remote_rm_url or [],
            self.args.reward_weights, self.args.torch_dtype, config.micro_rollout_batch_size,
            self.args.remote_rm_timeout, self.args.remote_rm_retries, self.device, self.args.use_chat_template,
            self.args, self.args.reward_func_timeout)
        self.rewards.sources = [FiniteRewards(source) for source in self.rewards.sources]
        stops = stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None), ctx.encoder.template)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stops[0]
        self.engine = self._engine(stops)
        self.sampling = Sampling(n=config.n_samples_per_prompt, max_new_tokens=config.generate_max_len,
                                 temperature=config.temperature, top_p=config.top_p, top_k=self.args.top_k)
        self.sampling.check()

        self.steps_per_epoch = len(self.train_rows) // config.rollout_batch_size
        self.max_steps = (self.args.max_steps if self.args.max_steps > 0
                          else max(1, math.ceil(self.args.num_train_epochs * self.steps_per_epoch)))
        self.micro_batch = self.args.batch_size
        self.train_batch = self.args.batch_size * gradient_accumulation(self.args)
        samples = config.rollout_batch_size * config.n_samples_per_prompt
        updates = self.max_steps * config.num_ppo_epochs * math.ceil(samples / self.train_batch)
        lr = ctx.hf_args["learning_rate"]
        self.optimizer, self.scheduler = self._optimizer(self.model, lr, updates)
        if self.critic is not None:
            self.critic_optimizer, self.critic_scheduler = self._optimizer(
                self.critic, self.args.critic_learning_rate or lr, updates)
        self.kl = rl_math.AdaptiveKLController(config.kl_coef, self.args.target_kl, self.args.kl_horizon)
        self.reward_moments = rl_math.RunningMoments()
        self.step = 0
        self.started = time.time()
        self.losses: list[float] = []
        self.stop = next((c for c in ctx.callbacks if isinstance(c, StopOnSignal)), None)
        self.trackers = LoopTrackers(trackers(self.args.report_to))

    # --- models -------------------------------------------------------------------------------------------

    def _policy(self, ctx):
        model = ctx.model
        if self.args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if ctx.peft_config is not None:
            from peft import get_peft_model

            if self.args.gradient_checkpointing:
                model.enable_input_require_grads()  # frozen embeddings: checkpointed LoRA layers still need grads
            model = get_peft_model(model, ctx.peft_config)
        return model.to(self.device).eval()

    def _engine(self, stops: list[int]):
        """pt generates with the policy itself; vllm starts on --model (its base when that is an adapter folder)
        and gets the policy's weights pushed before every generation."""
        if self.args.engine == "vllm" and self.args.vllm_mode == "server":
            from rlhfx.engines import make_engine
            from rlhfx.engines.remote import server_url

            return make_engine("server", url=server_url(self.args), model=self.model, tokenizer=self.tokenizer,
                               stop_ids=stops, timeout=self.args.vllm_server_timeout,
                               check_every=self.args.vllm_check_weights_every,
                               logprobs=self.config.enable_vllm_is_correction)
        if self.args.engine == "vllm":
            from rlhfx.engines import make_engine
            from rlhfx.training.models import _adapter_base, resolve_model_path

            path = resolve_model_path(self.args.model, self.args.model_type)
            base = _adapter_base(path)
            return make_engine("vllm", model_path=resolve_model_path(base, None) if base else path,
                               tokenizer=self.tokenizer, stop_ids=stops, dtype=self.args.torch_dtype, seed=self.args.seed,
                               gpu_memory_utilization=self.args.vllm_gpu_memory_utilization,
                               tp_size=self.args.vllm_tensor_parallel_size, max_model_len=self.args.vllm_max_model_len,
                               sleep_level=self.args.sleep_level, logprobs=self.config.enable_vllm_is_correction)
        from rlhfx.engines.pt import PtEngine

        prompts_per_call = max(1, self.config.micro_rollout_batch_size // self.config.n_samples_per_prompt)
        return PtEngine(self.model, self.tokenizer, stop_ids=stops, batch_size=prompts_per_call)

    def _policy_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The policy's weights under their Hugging Face names; a LoRA adapter is merged into them."""
        if not hasattr(self.model, "merge_adapter"):
            return list(self.model.named_parameters())
        self.model.merge_adapter()
        try:
            return [(name.removeprefix("base_model.model.").replace(".base_layer", ""), p.detach().clone())
                    for name, p in self.model.named_parameters() if "lora_" not in name]
        finally:
            self.model.unmerge_adapter()

    def _critic(self):
        from rlhfx.algos.rm import zero_new_head
        from rlhfx.training.models import load_causal_lm, resolve_model_path, trained_weights_dtype

        source = self.args.critic_model or (self.args.reward_model or [None])[0] or self.args.model
        critic = load_causal_lm(resolve_model_path(source, None), trained_weights_dtype(self.args), "sequence_classification")
        zero_new_head(critic, say)
        if self.args.train_type == "lora":
            from peft import LoraConfig, get_peft_model

            targets = [n for n, m in critic.named_modules() if isinstance(m, torch.nn.Linear) and n.split(".")[-1] != "score"]
            critic = get_peft_model(critic, LoraConfig(
                r=self.args.lora_rank, lora_alpha=self.args.lora_alpha, lora_dropout=0.0, task_type="SEQ_CLS",
                target_modules=sorted({n.split(".")[-1] for n in targets}), modules_to_save=["score"]))
        return critic.to(self.device).eval()

    def _optimizer(self, model, lr: float, total: int):
        from transformers import get_scheduler

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.args.weight_decay)
        scheduler = get_scheduler(self.args.lr_scheduler_type, optimizer,
                                  num_warmup_steps=int(self.args.warmup_ratio * total), num_training_steps=total)
        return optimizer, scheduler

    def remove_callback(self, callback) -> None:
        """The runner removes TRL's printer; this trainer logs by itself."""

    # --- rollout ------------------------------------------------------------------------------------------

    def _batch_rows(self, step: int) -> list[dict]:
        """The prompts of `step`: epoch e is a permutation seeded by (seed, e), cut into rollout batches."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.train_rows), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        size = self.config.rollout_batch_size
        return [self.train_rows[i] for i in order[index * size : (index + 1) * size].tolist()]

    def _generate(self, rows: list[dict], sampling: Sampling):
        """(samples, prompt ids, response ids, finished, engine log-probs) for every prompt's n completions, prompts'
        samples consecutive; finished is False for a completion cut at --generate_max_len; the log-probs are the
        engine's own (vllm with --enable_vllm_is_correction; else zeros)."""
        if self.args.engine == "vllm":
            self.engine.wake_up()
            self.engine.update_weights(self._policy_weights())
        with self._offloaded(), self._mixed_precision():
            completions = self.engine.generate([row["prompt_ids"] for row in rows], sampling)
        if self.args.engine == "vllm":
            self.engine.sleep()
        samples, prompt_ids, response_ids, finished, logprobs = [], [], [], [], []
        for row, outs in zip(rows, completions):
            for completion in outs:
                samples.append(Sample(json.loads(row["prompt_messages"]), row["prompt_text"], completion.text,
                                      row.get("label"), completion.token_ids))
                prompt_ids.append(row["prompt_ids"])
                response_ids.append(completion.token_ids or [self.engine.stop_ids[0]])
                finished.append(completion.finished)
                logprobs.append(completion.logprobs or [0.0] * len(response_ids[-1]))
        return samples, prompt_ids, response_ids, finished, logprobs

    def _score(self, rows: list[dict]) -> list[list[tuple]]:
        """Generate and score: per prompt, its n (sample, prompt ids, response ids, finished, reward, overlong
        penalty, engine log-probs), the reward being the sources' and the penalty --overlong_buffer_len's shaping
        (else 0)."""
        config = self.config
        samples, prompt_ids, response_ids, finished, logprobs = self._generate(rows, self.sampling)
        rewards = self.rewards(samples)
        penalty = [0.0] * len(samples)
        if config.overlong_buffer_len:
            lengths = torch.tensor([len(ids) for ids in response_ids])
            penalty = rl_math.overlong_penalty(lengths, config.generate_max_len, config.overlong_buffer_len,
                                               config.overlong_penalty_factor).tolist()
        flat = list(zip(samples, prompt_ids, response_ids, finished, rewards, penalty, logprobs))
        n = config.n_samples_per_prompt
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    def _rollout_groups(self, rows: list[dict]) -> tuple[list[list[tuple]], dict]:
        """The step's scored groups, and the reward statistics of its prompts' first samples. With
        --dynamic_sampling only groups whose (shaped) rewards differ are kept, topped up from further rounds of
        other prompts (at most --max_resample_times) to --rollout_batch_size; if none differ the batch is kept."""
        config = self.config
        groups = self._score(rows)
        raw = torch.tensor([sample[4] for group in groups for sample in group])
        stats = {"reward": raw.mean().item(), "reward_std": raw.std().item() if len(raw) > 1 else 0.0}
        if config.overlong_buffer_len:
            stats["overlong_penalty"] = sum(sample[5] for group in groups for sample in group) / len(raw)
        if not config.dynamic_sampling:
            return groups, stats
        kept, rounds = self._varied(groups), 0
        stats["varied_groups"] = len(kept) / len(groups)
        while len(kept) < len(rows) and rounds < config.max_resample_times:
            rounds += 1
            kept += self._varied(self._score(self._extra_rows(rounds)))
        stats["sampling_rounds"] = rounds
        return (kept[: len(rows)] if kept else groups), stats

    def _varied(self, groups: list[list[tuple]]) -> list[list[tuple]]:
        shaped = torch.tensor([sample[4] + sample[5] for group in groups for sample in group])
        varied = rl_math.varied_groups(shaped, self.config.n_samples_per_prompt).tolist()
        return [group for group, keep in zip(groups, varied) if keep]

    def _extra_rows(self, round_: int) -> list[dict]:
        """Dynamic sampling's further prompts: a draw fixed by (seed, step, round), so a resumed run draws the same."""
        generator = torch.Generator().manual_seed(self.args.seed + 1_000_003 * (self.step + 1) + round_)
        order = torch.randperm(len(self.train_rows), generator=generator)[: self.config.rollout_batch_size]
        return [self.train_rows[i] for i in order.tolist()]

    def _layout(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> dict:
        width, length = max(map(len, prompt_ids)), max(map(len, response_ids))
        ids = torch.full((len(prompt_ids), width + length), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros((len(prompt_ids), length))
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            ids[i, width - len(p) : width + len(r)] = torch.tensor(p + r)
            attention[i, width - len(p) : width + len(r)] = 1
            mask[i, : len(r)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": attention.to(self.device),
                "mask": mask.to(self.device), "width": width}

    @torch.no_grad()
    def rollout(self, rows: list[dict]) -> dict:
        config = self.config
        groups, stats = self._rollout_groups(rows)
        samples, prompt_ids, response_ids, finished, rewards, overlong, engine_logp = zip(*[s for group in groups for s in group])
        batch = self._layout(prompt_ids, response_ids)
        old_logp, ref_logp, values = [], [], []
        for part in _chunks(len(samples), config.micro_rollout_batch_size):
            micro = _select(batch, part)
            old_logp.append(self._logp(self.model, micro)[0])
            ref_logp.append(self._ref_logp(micro))
            if self.critic is not None:
                values.append(self._values(micro))
        batch.update(old_logp=torch.cat(old_logp), ref_logp=torch.cat(ref_logp))
        mask = batch["mask"]
        if self.args.log_completions:
            self._log_completions(samples, list(rewards))
        scores = torch.tensor(rewards, dtype=torch.float32, device=self.device) + torch.tensor(overlong, device=self.device)
        if config.normalize_reward:
            self.reward_moments.update(scores.tolist())
            scores = self.reward_moments.normalize(scores)
        kl = rl_math.kl_per_token(batch["old_logp"], batch["ref_logp"], config.kl_estimator, mask)
        penalty = torch.zeros_like(kl) if config.use_kl_loss else kl
        batch["values"] = torch.cat(values) * mask if values else None
        advantages, returns = rl_math.advantages_and_returns(
            config.advantage_estimator, scores, penalty, self.kl.value, mask, config.n_samples_per_prompt,
            config.gamma, config.lam, config.reward_clip_range, batch["values"], config.whiten_rewards)
        batch.update(advantages=advantages, returns=returns)
        sequence_kl = rl_math.sequence_kl(kl)
        stats.update(kl=sequence_kl, kl_coef=self.kl.value, response_length=mask.sum(1).mean().item())
        if config.enable_vllm_is_correction:
            rollout_logp = torch.zeros_like(mask)
            for i, logps in enumerate(engine_logp):
                rollout_logp[i, : len(logps)] = torch.tensor(logps)
            low, high = config.vllm_is_truncated_threshold
            batch["is_weights"], correction = rl_math.rollout_correction(
                batch["old_logp"], rollout_logp, mask, config.vllm_is_correction_type, low, high)
            stats.update(correction)
        if config.overlong_filter:  # truncated completions stay in their group's baseline but out of every loss
            complete = torch.tensor(finished, dtype=mask.dtype, device=mask.device)
            batch["mask"] = mask * complete[:, None]
            stats["truncated"] = 1 - complete.mean().item()
        self.kl.update(sequence_kl, len(samples))
        return batch, stats

    @contextmanager
    def _offloaded(self):
        """--offload_model / --offload_optimizer: the policy and reference weights, or the optimizer states, wait
        in CPU memory while vLLM generates, so its KV cache can use that GPU memory."""
        models = [m for m in (self.model, self.ref_model) if m is not None] if self.args.offload_model else []
        states = [s for s in self.optimizer.state.values()] if self.args.offload_optimizer else []
        for model in models:
            model.to("cpu")
        _move_states(states, "cpu")
        if models or states:
            torch.cuda.empty_cache()
        try:
            yield
        finally:
            for model in models:
                model.to(self.device)
            _move_states(states, self.device)

    def _log_completions(self, samples: list[Sample], rewards: list[float]) -> None:
        with open(self.output_dir / "completions.jsonl", "a") as f:
            for sample, reward in zip(samples, rewards):
                f.write(json.dumps({"step": self.step + 1, "prompt": sample.prompt, "completion": sample.response,
                                    "solution": sample.label, "reward": reward}) + "\n")

    def _mixed_precision(self):
        """bf16 matrix products over float32 weights on a GPU, as the Trainer's --bf16 does."""
        from rlhfx.training.hf_args import bf16_enabled

        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and bf16_enabled(self.args))

    def _forward(self, model, micro: dict):
        positions = (micro["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with self._mixed_precision():
            return model(input_ids=micro["input_ids"], attention_mask=micro["attention_mask"], position_ids=positions,
                         use_cache=False)

    def _logp(self, model, micro: dict):
        """Per response token: log-prob of the sampled token, and the logits (/ temperature) it came from."""
        width, length = micro["width"], micro["mask"].shape[1]
        logits = self._forward(model, micro).logits[:, width - 1 : width + length - 1].float()
        logits = logits / max(self.config.temperature, 1e-6)
        tokens = micro["input_ids"][:, width : width + length]
        logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
        return logp * micro["mask"], logits

    def _ref_logp(self, micro: dict) -> torch.Tensor:
        if self.ref_model is not None:
            return self._logp(self.ref_model, micro)[0]
        with self.model.disable_adapter():
            return self._logp(self.model, micro)[0]

    def _values(self, micro: dict) -> torch.Tensor:
        inner = self.critic.get_base_model() if hasattr(self.critic, "get_base_model") else self.critic
        positions = (micro["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        width, length = micro["width"], micro["mask"].shape[1]
        with self._mixed_precision():
            hidden = getattr(inner, inner.base_model_prefix)(input_ids=micro["input_ids"],
                                                              attention_mask=micro["attention_mask"],
                                                              position_ids=positions, use_cache=False).last_hidden_state
            return inner.score(hidden[:, width - 1 : width + length - 1]).squeeze(-1).float()

    # --- update -------------------------------------------------------------------------------------------

    def update(self, batch: dict) -> dict:
        config, n = self.config, batch["mask"].shape[0]
        totals: dict[str, list[float]] = {}
        for model in (self.model, self.critic):
            if model is not None:
                _train_without_dropout(model)
        for _ in range(config.num_ppo_epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, self.train_batch):
                indices = order[start : start + self.train_batch]
                parts = [indices[i : i + self.micro_batch] for i in range(0, len(indices), self.micro_batch)]
                mask = batch["mask"][indices]  # the optimizer batch's totals normalise every micro batch's loss
                counts = {"n_tokens": mask.sum().clamp(min=1), "n_sequences": (mask.sum(1) > 0).sum().clamp(min=1)}
                for part in parts:
                    for key, value in self._micro_step(_select(batch, part), len(parts), counts).items():
                        totals.setdefault(key, []).append(value)
                self._optimizer_step(self.model, self.optimizer, self.scheduler)
                if self.critic is not None:
                    self._optimizer_step(self.critic, self.critic_optimizer, self.critic_scheduler)
        for model in (self.model, self.critic):
            if model is not None:
                model.eval()
        return {key: sum(values) / len(values) for key, values in totals.items()}

    def _micro_step(self, micro: dict, accumulation: int, counts: dict) -> dict:
        """One micro batch's backward. The policy loss (and the KL loss term) is its share of the optimizer batch's
        loss under --loss_agg_mode (`counts`: that batch's tokens and sequences), so the accumulated gradient is the
        batch's; the logged values are scaled back by `accumulation` so that their mean is the batch's loss."""
        config, mask = self.config, micro["mask"]
        logp, logits = self._logp(self.model, micro)
        out = rl_math.policy_loss(logp, micro["old_logp"], micro["advantages"], mask, config.cliprange,
                                  config.cliprange_high, config.dual_clip,
                                  "sequence" if config.policy_loss == "gspo" else "token", config.loss_agg_mode,
                                  weights=micro.get("is_weights"), **counts)
        loss = out["loss"]
        entropy = rl_math.entropy(logits, mask)
        if config.entropy_coef:
            loss = loss - config.entropy_coef * entropy / accumulation
        stats = {"policy_loss": out["loss"].item() * accumulation, "clip_ratio": out["clip_ratio"].item(),
                 "approx_kl": out["approx_kl"].item(), "entropy": entropy.item()}
        if config.use_kl_loss:
            kl = rl_math.kl_per_token(logp, micro["ref_logp"], config.kl_estimator, mask,
                                      micro["old_logp"] if config.kl_unbiased_gradient else None)
            kl_loss = rl_math.aggregate(kl, mask, config.loss_agg_mode, **counts)
            loss = loss + self.kl.value * kl_loss
            stats["kl_loss"] = kl_loss.item() * accumulation
        loss.backward()
        if self.critic is not None:
            values = self._values(micro)
            value_loss = rl_math.value_loss(values, micro["values"], micro["returns"], mask, config.cliprange_value)
            (config.vf_coef * value_loss / accumulation).backward()
            stats["value_loss"] = value_loss.item()
        return stats

    def _optimizer_step(self, model, optimizer, scheduler) -> None:
        """Clip and step; a NaN/inf gradient norm (NaN/inf anywhere in the loss or gradients) stops the run before
        the weights change, as the offline trainers' NonFiniteGuard does."""
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.args.max_grad_norm)
        if not torch.isfinite(norm):
            raise non_finite_error(self.step + 1, model, self.scheduler.get_last_lr()[0], newest_checkpoint(self.output_dir),
                                   "The loss or its gradients became NaN/inf (the update was not applied)")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    # --- the run ------------------------------------------------------------------------------------------

    @property
    def state(self):
        """What the runner reads of a Trainer's state."""
        return SimpleNamespace(global_step=self.step)

    def train(self, resume_from_checkpoint: str | None = None):
        """Run to max_steps; a SIGTERM/Ctrl-C (the runner's StopOnSignal) saves a checkpoint after the step and stops."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("[bold]rl"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"))
        if resume_from_checkpoint:
            self._resume(Path(resume_from_checkpoint))
        with Progress(*columns) as progress:
            task = progress.add_task("rl", total=self.max_steps, completed=self.step, info="")
            while self.step < self.max_steps:
                start = time.time()
                batch, stats = self.rollout(self._batch_rows(self.step))
                stats.update(self.update(batch))
                self.step += 1
                self._check_finite_weights()
                n = batch["mask"].shape[0]
                stats.update(samples_per_second=n / (time.time() - start), learning_rate=self.scheduler.get_last_lr()[0])
                self.losses.append(stats["policy_loss"])
                if self.step == 1 or self.step % self.args.logging_steps == 0 or self.step == self.max_steps:
                    self._log(stats)
                progress.update(task, completed=self.step, info=f"reward {stats['reward']:.3f}  kl {stats['kl']:.3f}")
                if self.args.eval_steps and self.eval_rows and self.step % self.args.eval_steps == 0:
                    self.evaluate()
                if self.stop is not None and self.stop.signum is not None:
                    self.save_checkpoint()
                    break
                if self.args.save_steps > 0 and self.step % self.args.save_steps == 0 and self.step < self.max_steps:
                    self.save_checkpoint()
        loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        return SimpleNamespace(training_loss=loss, global_step=self.step)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean reward of one greedy response to each held-out prompt."""
        if not self.eval_rows:
            return {}
        greedy = Sampling(n=1, max_new_tokens=self.config.generate_max_len, greedy=True)
        samples, _, response_ids, _, _ = self._generate(self.eval_rows, greedy)
        result = {"eval_reward": sum(self.rewards(samples)) / len(samples),
                  "eval_response_length": sum(map(len, response_ids)) / len(response_ids)}
        self._log(result)
        return result

    def _log(self, stats: dict) -> None:
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "time": round(time.time(), 3), **stats}
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.trackers.log(row)
        if not sys.stdout.isatty():  # a log file or pipe: the progress bar shows nothing there until the end
            print(plain_line(self.step, self.max_steps, row["epoch"], stats, time.time() - self.started), flush=True)

    def _check_finite_weights(self) -> None:
        """After every update, so no rollout, checkpoint or final model is ever made from NaN/inf weights."""
        for model in (self.model, self.critic):
            if model is not None:
                check_finite_weights(model, self.step, self.scheduler.get_last_lr()[0], newest_checkpoint(self.output_dir))

    def save_model(self, folder: str) -> None:
        """The final weights; the runner's last call, so the engine is shut down here too."""
        self.model.save_pretrained(folder)
        self.engine.close()
        self.trackers.close()

    # --- checkpoints --------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Written into .staging and renamed into place when complete (rlhfx.training.checkpoints' convention:
        a checkpoint-N folder with trainer_state.json is complete)."""
        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / STAGING / final.name
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write_checkpoint(tmp)
        except Exception as error:
            if not is_disk_full(error):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_full_error(final.name, self.output_dir, newest_checkpoint(self.output_dir)) from None
        publish(tmp, final)
        rotate(self.output_dir, self.args.save_total_limit)
        return final

    def _write_checkpoint(self, tmp: Path) -> None:
        self.model.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        state = {"step": self.step, "kl_coef": self.kl.value, "reward_moments": vars(self.reward_moments),
                 "policy": _trainable(self.model), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
        if self.critic is not None:
            state.update(critic=_trainable(self.critic), critic_optimizer=self.critic_optimizer.state_dict(),
                         critic_scheduler=self.critic_scheduler.state_dict())
        if self.args.save_only_model:  # the weights only, as transformers' save_only_model: not resumable
            state = {key: value for key, value in state.items() if key in ("step", "policy", "critic")}
        torch.save(state, tmp / STATE)
        (tmp / TRAINER_STATE).write_text(json.dumps({"global_step": self.step}) + "\n")

    def _resume(self, folder: Path) -> None:
        if not (folder / STATE).is_file():
            raise RlhfxError(f"{folder} has no {STATE}: it is not a checkpoint of an online RL run.",
                             "resume from a checkpoint-N folder written by this --rlhf_type.")
        state = torch.load(folder / STATE, map_location=self.device, weights_only=False)
        if "optimizer" not in state:
            raise RlhfxError(f"{folder} was saved with --save_only_model: it holds the weights but no optimizer, "
                             "scheduler or RNG state, so the run cannot continue from it.",
                             f"start a new run from its weights (--model {folder}), or resume from a checkpoint "
                             "saved without --save_only_model.")
        self.model.load_state_dict(state["policy"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.critic is not None:
            if "critic" not in state:
                raise RlhfxError(f"Checkpoint {folder} has no critic, but this run's estimator (gae) needs one.",
                                 "resume with the --advantage_estimator of the run that wrote it.")
            self.critic.load_state_dict(state["critic"], strict=False)
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            self.critic_scheduler.load_state_dict(state["critic_scheduler"])
        self.step, self.kl.value = state["step"], state["kl_coef"]
        vars(self.reward_moments).update(state["reward_moments"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        say(f"resumed from {folder} at step {self.step}")


class FiniteRewards:
    """A reward source whose every reward must be a finite number: one NaN/inf would make the advantages, then
    the gradients, then every weight NaN. The run stops naming the source and the sample."""

    def __init__(self, source):
        self.source, self.name = source, type(source).__name__
        for attribute, flag in (("path", "--reward_model"), ("spec", "--reward_func"), ("url", "--remote_rm_url")):
            if hasattr(source, attribute):
                self.name = f"{flag} {getattr(source, attribute)}"

    def __call__(self, samples: list[Sample]) -> list[float]:
        rewards = self.source(samples)
        for i, (reward, sample) in enumerate(zip(rewards, samples)):
            if not math.isfinite(reward):
                raise RlhfxError(f"The reward source {self.name} returned {reward} for sample {i} of the batch "
                                 f"(prompt {sample.prompt[-200:]!r}, response {sample.response[:200]!r}); no update was "
                                 "made with it.", "fix the source so it returns a finite number for every sample, then "
                                 "resume from the last checkpoint (--resume_from_checkpoint latest).")
        return rewards


def _prompt_rows(dataset, limit: int | None, split: str) -> list[dict]:
    rows = [dict(row) for row in dataset]
    kept = [row for row in rows if limit is None or len(row["prompt_ids"]) <= limit]
    if len(kept) < len(rows):
        say(f"  data: {split}: dropped {len(rows) - len(kept)} prompts longer than --prompt_max_len {limit}")
    if not kept:
        raise RlhfxError(f"Every {split} prompt is longer than --prompt_max_len {limit} tokens.", "raise --prompt_max_len.")
    return kept


def _train_without_dropout(model) -> None:
    """Train mode (so gradient checkpointing applies) with every dropout layer off: the update's log-probs are
    computed as the rollout's were, and the ratio starts at exactly 1."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()


def _move_states(states: list[dict], device) -> None:
    for state in states:
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device)


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _select(batch: dict, indices: list[int]) -> dict:
    """The rows `indices` of every per-sample tensor (the shared prompt width is kept)."""
    index = torch.tensor(indices, device=batch["mask"].device)
    return {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _trainable(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
