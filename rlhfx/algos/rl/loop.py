"""The online RL loop: rollout -> advantages -> PPO updates, step after step, with logging, evaluation and checkpoints.

One step = one rollout of `rollout_batch_size` prompts x `n_samples_per_prompt` responses (split over the ranks
under torchrun), then the update stage. It offers what the runner uses of a Hugging Face Trainer (evaluate, train,
save_model, model), so the run's outputs are the same as every other algorithm's.

The critic (gae only) defaults to the first reward model (as OpenRLHF), else --model with a new zero head; with
--train_type lora it gets its own adapter on --lora_target_modules (and a trained score head).

Checkpoints (`checkpoint-N/`: the policy in Hugging Face format, `train_state/` with accelerate's state of every
rank (weights, optimizer and its ZeRO shards, scheduler, RNG states) and `rl_state.pt` with the step, KL coefficient,
reward statistics, world size and CHORD's place in its expert set; the prompts' position follows from the step) let
`--resume_from_checkpoint` (resolved by the runner, which also rewinds metrics.jsonl) continue exactly where the run
was, on as many ranks.
"""

import json
import math
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

from rlhfx.algos import rl_math
from rlhfx.algos.rl.batch import ActorCritic
from rlhfx.algos.rl.chord import Chord
from rlhfx.algos.rl.dist import Ranks
from rlhfx.algos.rl.multi_turn import MultiTurnRollout, multi_turns
from rlhfx.algos.rl.rollout import RolloutStage, make_rollout_engine, reward_sources
from rlhfx.algos.rl.update import UpdateStage, deepspeed_plugin
from rlhfx.engines import stop_token_ids
from rlhfx.errors import RlhfxError
from rlhfx.training.callbacks import plain_line
from rlhfx.training.checkpoints import (STAGING, TRAINER_STATE, disk_full_error, is_disk_full, newest_checkpoint,
                                        publish, rotate)
from rlhfx.training.guards import StopOnSignal, check_finite_weights
from rlhfx.models import bf16_enabled
from rlhfx.training.hf_args import gradient_accumulation
from rlhfx.training.runner import say
from rlhfx.training.tracking import LoopTrackers, trackers

STATE = "rl_state.pt"
TRAIN_STATE = "train_state"


def make_accelerator(args, hidden_size: int):
    """Plain / DDP (gloo on the CPU) / DeepSpeed, from the torchrun environment and --deepspeed."""
    from accelerate import Accelerator, PartialState

    from rlhfx.training.hf_args import world_size

    cpu = not torch.cuda.is_available()
    if not args.deepspeed:
        return Accelerator(cpu=cpu)
    if cpu:  # gloo, as the Trainer's CPU runs; DeepSpeed would first JIT-compile a shared-memory op gloo does not need
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        PartialState(cpu=True)
    bf16 = not cpu and bf16_enabled(args)
    return Accelerator(deepspeed_plugin=deepspeed_plugin(args, args.batch_size, world_size(), hidden_size, bf16))


class OnlineRLTrainer:
    def __init__(self, ctx, config):
        from transformers import set_seed

        self.accelerator = make_accelerator(ctx.args, ctx.model.config.hidden_size)
        ranks = Ranks(self.accelerator.process_index, self.accelerator.num_processes, self.accelerator.device)
        self._plan(ctx, config, ranks, ranks.world)
        args, tokenizer = self.args, self.tokenizer
        policy = policy_model(args, ctx.model, ctx.peft_config, self.device)
        critic = critic_model(args, config, ctx.peft_config, self.device) if config.uses_critic else None
        self.ref_model = ctx.ref_model.to(self.device).eval() if ctx.ref_model is not None else None
        self.actor_critic = ActorCritic(policy, critic)
        self.model = policy  # what the runner reads (weights agreement across ranks)
        self.rewards = rewards = reward_sources(args, config, self.device)
        stops = stop_token_ids(tokenizer, getattr(policy, "generation_config", None), ctx.encoder.template)
        pad = pad_id(tokenizer, stops)
        lr = ctx.hf_args["learning_rate"]
        if config.chord_sft_dataset:
            self.chord = Chord(config, ctx.sft_train_dataset, pad, args.seed, ranks)
        self.updater = UpdateStage(self.accelerator, ranks, self.actor_critic, config, args, lr,
                                   config.critic_learning_rate or lr, self.total_updates, self.kl,
                                   self._mixed_precision, self.output_dir, self.chord)
        self.engine = make_rollout_engine(args, config, tokenizer, policy, stops, ranks)
        multi_turn = None
        if config.multi_turn_scheduler:
            scheduler = multi_turns[config.multi_turn_scheduler](args, tokenizer, config.max_turns)
            multi_turn = MultiTurnRollout(scheduler, ctx.encoder, stops, config.max_turns,
                                          config.completion_length_limit_scope == "total",
                                          lambda pending: ranks.max(float(pending)) > 0)
        self.rollout = RolloutStage(args, config, self.engine, rewards, self.actor_critic, self.ref_model, ranks, pad,
                                    self._mixed_precision, self.kl, self.reward_moments,
                                    self.output_dir / "completions.jsonl" if config.log_completions else None,
                                    self._offloaded, multi_turn)
        set_seed(args.seed + ranks.rank)  # each rank samples its own responses

    def _plan(self, ctx, config, ranks, world: int) -> None:
        """The run's prompts, schedule and loop state; `world`: the data-parallel ranks that share each rollout."""
        self.args, self.config, self.tokenizer = args, config, ctx.tokenizer = ctx.args, config, ctx.tokenizer
        self.output_dir = Path(ctx.hf_args["output_dir"])
        self.ranks, self.device, self.world = ranks, ranks.device, world
        self.train_rows = _prompt_rows(ctx.train_dataset, config.prompt_max_len, "train")
        self.eval_rows = _prompt_rows(ctx.eval_dataset, config.prompt_max_len, "val") if ctx.eval_dataset else []
        if len(self.train_rows) < config.rollout_batch_size:
            raise RlhfxError(f"--rollout_batch_size {config.rollout_batch_size} is more than the {len(self.train_rows)} "
                             "training prompts.", "lower --rollout_batch_size or add prompts.")
        if config.rollout_batch_size % world:
            raise RlhfxError(f"--rollout_batch_size {config.rollout_batch_size} prompts do not split evenly over "
                             f"{world} processes (each rolls out its share, all samples of a prompt together).",
                             f"use a multiple of {world}.")
        self.steps_per_epoch = len(self.train_rows) // config.rollout_batch_size
        self.max_steps = (args.max_steps if args.max_steps > 0
                          else max(1, math.ceil(args.num_train_epochs * self.steps_per_epoch)))
        self.train_batch = args.batch_size * gradient_accumulation(args, world)  # per rank: --train_batch_size over all
        samples = config.rollout_batch_size * config.n_samples_per_prompt // world
        self.total_updates = self.max_steps * config.num_ppo_epochs * math.ceil(samples / self.train_batch)
        self.kl = rl_math.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
        self.reward_moments = rl_math.RunningMoments()
        self.chord = None  # rlhfx.algos.rl.chord.Chord with --chord_sft_dataset
        self.step = 0
        self.started = time.time()
        self.losses: list[float] = []
        self.stop = next((c for c in ctx.callbacks if isinstance(c, StopOnSignal)), None)
        self.trackers = LoopTrackers(trackers(args.report_to) if ranks.is_main else [])

    def remove_callback(self, callback) -> None:
        """The runner removes TRL's printer; this trainer logs by itself."""

    @contextmanager
    def _offloaded(self):
        """--offload_model / --offload_optimizer: the policy and reference weights, or the optimizer states, wait
        in CPU memory while vLLM generates, so its KV cache can use that GPU memory."""
        models = [m for m in (self.model, self.ref_model) if m is not None] if self.config.offload_model else []
        states = [s for o in self.updater.optimizers for s in o.state.values()] if self.config.offload_optimizer else []
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

    def _mixed_precision(self):
        return mixed_precision(self.device, self.args)

    # --- the run ------------------------------------------------------------------------------------------

    def _batch_rows(self, step: int) -> list[dict]:
        """The prompts of `step`: epoch e is a permutation seeded by (seed, e), cut into rollout batches."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.train_rows), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        size = self.config.rollout_batch_size
        return [self.train_rows[i] for i in order[index * size : (index + 1) * size].tolist()]

    @property
    def state(self):
        """What the runner reads of a Trainer's state."""
        return SimpleNamespace(global_step=self.step)

    def train(self, resume_from_checkpoint: str | None = None):
        """Run to max_steps; a SIGTERM/Ctrl-C (the runner's StopOnSignal) saves a checkpoint after the step and stops
        (on every rank: the ranks agree on it after each step)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("[bold]rl"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}"))
        if resume_from_checkpoint:
            self._resume(Path(resume_from_checkpoint))
        with Progress(*columns, disable=not self.ranks.is_main) as progress:
            task = progress.add_task("rl", total=self.max_steps, completed=self.step, info="")
            while self.step < self.max_steps:
                start = time.time()
                batch, stats = self.rollout(self._batch_rows(self.step), self.step, self.train_rows)
                stats.update(self.updater.update(batch, self.train_batch, self.step))
                self.step += 1
                self._check_finite_weights()
                n = self.ranks.sum(torch.tensor(float(batch["mask"].shape[0]))).item()
                stats.update(samples_per_second=n / (time.time() - start),
                             learning_rate=self._learning_rate())
                self.losses.append(stats["policy_loss"])
                if self.step == 1 or self.step % self.args.logging_steps == 0 or self.step == self.max_steps:
                    self._log(stats)
                progress.update(task, completed=self.step, info=f"reward {stats['reward']:.3f}  kl {stats['kl']:.3f}")
                if (self.args.eval_steps or 0) > 0 and self.eval_rows and self.step % self.args.eval_steps == 0:
                    self.evaluate()
                if self.ranks.max(float(self.stop is not None and self.stop.signum is not None)):
                    self.save_checkpoint()
                    break
                if self.args.save_steps > 0 and self.step % self.args.save_steps == 0 and self.step < self.max_steps:
                    self.save_checkpoint()
        loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        return SimpleNamespace(training_loss=loss, global_step=self.step)

    def evaluate(self) -> dict:
        """Mean reward of one greedy response to each held-out prompt."""
        if not self.eval_rows:
            return {}
        result = self.rollout.evaluate(self.eval_rows)
        self._log(result)
        return result

    def _log(self, stats: dict) -> None:
        if not self.ranks.is_main:
            return
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "time": round(time.time(), 3), **stats}
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        self.trackers.log(row)
        if not sys.stdout.isatty():  # a log file or pipe: the progress bar shows nothing there until the end
            print(plain_line(self.step, self.max_steps, row["epoch"], stats, time.time() - self.started), flush=True)

    def _learning_rate(self) -> float:
        return self.updater.scheduler.get_last_lr()[0]

    def _check_finite_weights(self) -> None:
        """After every update, so no rollout, checkpoint or final model is ever made from NaN/inf weights."""
        for model in (self.actor_critic.policy, self.actor_critic.critic):
            if model is not None:
                check_finite_weights(model, self.step, self.updater.scheduler.get_last_lr()[0],
                                     newest_checkpoint(self.output_dir))

    def _save_policy(self, folder: str) -> None:
        save_policy(self.accelerator, self.updater, self.actor_critic.policy, self.ranks, folder)

    def save_model(self, folder: str) -> None:
        """The final weights; the runner's last call, so the engine is shut down here too."""
        self._save_policy(folder)
        self.engine.close()
        self.trackers.close()

    # --- checkpoints --------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Written into .staging by every rank and renamed into place by the main one when complete
        (rlhfx.training.checkpoints' convention: a checkpoint-N folder with trainer_state.json is complete)."""
        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / STAGING / final.name
        if self.ranks.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        self.ranks.barrier()
        try:
            self._write_checkpoint(tmp)
        except Exception as error:
            if not is_disk_full(error):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_full_error(final.name, self.output_dir, newest_checkpoint(self.output_dir)) from None
        self.ranks.barrier()
        if self.ranks.is_main:
            publish(tmp, final)
            rotate(self.output_dir, self.args.save_total_limit)
        self.ranks.barrier()
        return final

    def _write_checkpoint(self, tmp: Path) -> None:
        self._save_policy(str(tmp))
        if not self.args.save_only_model:  # else the weights only, as transformers' save_only_model: not resumable
            self._save_train_state(tmp / TRAIN_STATE)
        if self.ranks.is_main:
            self.tokenizer.save_pretrained(str(tmp))
            torch.save({"step": self.step, "kl_coef": self.kl.value, "reward_moments": vars(self.reward_moments),
                        "world_size": self.world, "critic": self.config.uses_critic,
                        "chord": self.chord.batches.position() if self.chord else None}, tmp / STATE)
            (tmp / TRAINER_STATE).write_text(json.dumps({"global_step": self.step}) + "\n")

    def _save_train_state(self, folder: Path) -> None:
        self.accelerator.save_state(str(folder), safe_serialization=False)

    def _load_train_state(self, folder: Path) -> None:
        self.accelerator.load_state(str(folder))

    def _resume(self, folder: Path) -> None:
        if not (folder / STATE).is_file():
            raise RlhfxError(f"{folder} has no {STATE}: it is not a checkpoint of an online RL run.",
                             "resume from a checkpoint-N folder written by this --rlhf_type.")
        if not (folder / TRAIN_STATE).is_dir():
            raise RlhfxError(f"{folder} was saved with --save_only_model: it holds the weights but no optimizer, "
                             "scheduler or RNG state, so the run cannot continue from it.",
                             f"start a new run from its weights (--model {folder}), or resume from a checkpoint "
                             "saved without --save_only_model.")
        state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
        if state.get("world_size", 1) != self.world:
            raise RlhfxError(f"{folder} was saved by {state.get('world_size', 1)} processes and this run has "
                             f"{self.world}: each rank's optimizer shard and random state belong to its own rank.",
                             f"resume with NPROC_PER_NODE={state.get('world_size', 1)} (x NNODES; under Ray, "
                             "--actor_num_nodes x --actor_num_gpus_per_node), as the run that saved it.")
        if state.get("critic", True) != self.config.uses_critic:
            raise RlhfxError(f"Checkpoint {folder} {'has' if state.get('critic', True) else 'has no'} critic, but this "
                             f"run's estimator ({self.config.advantage_estimator}) "
                             f"{'trains none' if state.get('critic', True) else 'needs one'}.",
                             "resume with the --advantage_estimator of the run that wrote it.")
        self._load_train_state(folder / TRAIN_STATE)
        self.step, self.kl.value = state["step"], state["kl_coef"]
        vars(self.reward_moments).update(state["reward_moments"])
        if self.chord and state.get("chord"):  # every rank draws as many expert batches: the main rank's position
            self.chord.batches.seek(state["chord"])
        say(f"resumed from {folder} at step {self.step}")


def policy_model(args, model, peft_config, device):
    """The trained policy: --model with gradient checkpointing and a new LoRA adapter as the flags ask."""
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if peft_config is not None:
        from peft import get_peft_model

        if args.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed LoRA layers still need grads
        model = get_peft_model(model, peft_config)
    return model.to(device).eval()


def critic_model(args, config, peft_config, device):
    from rlhfx.algos.rm import zero_new_head
    from rlhfx.models import load_causal_lm, resolve_model_path, trained_weights_dtype

    source = config.critic_model or (config.reward_model or [None])[0] or args.model
    critic = load_causal_lm(resolve_model_path(source, None), trained_weights_dtype(args), "sequence_classification")
    zero_new_head(critic, say)
    if peft_config is not None:  # its own adapter on the policy's --lora_target_modules; the score head whole
        from peft import LoraConfig, get_peft_model

        critic = get_peft_model(critic, LoraConfig(
            r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, task_type="SEQ_CLS",
            target_modules=sorted(set(peft_config.target_modules) - {"score"}), modules_to_save=["score"]))
    return critic.to(device).eval()


def mixed_precision(device, args):
    """bf16 matrix products over float32 weights on a GPU, as the Trainer's --bf16 does."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16_enabled(args))


def save_policy(accelerator, updater, policy, ranks, folder: str) -> None:
    """The policy in Hugging Face format (gathered whole from the ranks under ZeRO-3), written by the main rank."""
    state = accelerator.get_state_dict(updater.policy)
    if ranks.is_main:
        weights = {key.removeprefix("policy."): value for key, value in state.items() if key.startswith("policy.")}
        policy.save_pretrained(folder, state_dict=weights)


def pad_id(tokenizer, stops: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]


def _prompt_rows(dataset, limit: int | None, split: str) -> list[dict]:
    rows = [dict(row) for row in dataset]
    kept = [row for row in rows if limit is None or len(row["prompt_ids"]) <= limit]
    if len(kept) < len(rows):
        say(f"  data: {split}: dropped {len(rows) - len(kept)} prompts longer than --prompt_max_len {limit}")
    if not kept:
        raise RlhfxError(f"Every {split} prompt is longer than --prompt_max_len {limit} tokens.", "raise --prompt_max_len.")
    return kept


def _move_states(states: list[dict], device) -> None:
    for state in states:
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device)
