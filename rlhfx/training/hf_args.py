"""Translate rlhfx flags into the TrainingArguments fields every TRL config shares.

TRL's defaults are GPU-minded; on a machine without CUDA rlhfx trains in float32 on the CPU
(gloo under torchrun), with no gradient checkpointing unless asked for.
"""

import os

from rlhfx.models import bf16_enabled
from rlhfx.training.scale import deepspeed_config
from rlhfx.training.tracking import trackers


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation(args, world: int | None = None) -> int:
    """Micro steps per optimizer step: --train_batch_size over `world` data-parallel ranks (this process's
    torchrun world unless given: a Ray driver's actor group is not its own world)."""
    if args.gradient_accumulation_steps:
        return args.gradient_accumulation_steps
    if args.train_batch_size:
        per_step = args.batch_size * (world or world_size())
        return max(1, args.train_batch_size // per_step)
    return 1


def hf_training_kwargs(args, output_dir, learning_rate: float, has_eval: bool) -> dict:
    import torch

    eval_steps = None if args.eval_steps == -1 else args.eval_steps  # OpenRLHF's -1: only at the end
    eval_strategy = "steps" if has_eval and eval_steps else "no"
    if has_eval and args.values.get("eval_strategy") == "epoch":  # ms-swift's --eval_strategy epoch
        eval_strategy = "epoch"
    return dict(
        output_dir=str(output_dir),
        learning_rate=learning_rate,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        gradient_accumulation_steps=gradient_accumulation(args),
        warmup_steps=args.warmup_ratio,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler_type,
        max_grad_norm=args.max_grad_norm,
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=bf16_enabled(args),
        seed=args.seed,
        data_seed=args.seed,
        save_steps=args.save_steps,
        # OpenRLHF's -1 (and ms-swift's --save_strategy no): no checkpoints, final weights only
        save_strategy="no" if args.save_steps == -1 else args.values.get("save_strategy") or "steps",
        save_total_limit=args.save_total_limit,
        save_only_model=args.save_only_model,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps if eval_strategy == "steps" else None,
        report_to=trackers(args.report_to),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_num_workers=args.dataloader_num_workers,
        ddp_find_unused_parameters=False,
        deepspeed=deepspeed_config(args.deepspeed),
    )
