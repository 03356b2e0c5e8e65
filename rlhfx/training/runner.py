"""The flow of one training run, shared by `rlhfx sft` and every `rlhfx rlhf --rlhf_type`.

flags -> data (normalised, drops counted) -> model, tokenizer, template -> token columns ->
algorithm's trainer -> eval before, train, eval after -> weights/adapter, args.json, metrics.jsonl,
curves.png, summary.json (written last: a folder without it is not a finished run).
"""

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlhfx.data.loader import DataConfig, load_data
from rlhfx.errors import RlhfxError
from rlhfx.redact import redact
from rlhfx.training.outputs import check_output_folder, default_root, resolve_output_dir, write_json_atomic

console = Console()
SUMMARY_KEYS = ["eval_loss", "eval_nll", "eval_sft_loss", "eval_rewards/accuracies", "eval_rewards/margins",
                "eval_rewards/chosen", "eval_rewards/rejected", "eval_step_accuracy", "eval_rewards/good", "eval_rewards/bad",
                "eval_reward"]


@dataclass
class RunContext:
    """What an algorithm's `build_trainer` receives."""

    args: object
    model: object
    ref_model: object
    tokenizer: object
    peft_config: object
    train_dataset: object
    eval_dataset: object
    hf_args: dict
    callbacks: list
    algorithm: object = None  # its rlhfx.algos.Algorithm record
    options: object = None  # the algorithm's validated options (rlhfx.algos.options); None for those without
    sft_train_dataset: object = None  # the options' joint_sft() set (--sft_dataset, --chord_sft_dataset)
    sft_eval_dataset: object = None
    encoder: object = None  # the run's ChatEncoder (online RL renders prompts and stop tokens with it)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def say(*objects) -> None:
    if is_main_process():
        console.print(*objects, highlight=False)


def data_config(args, kind: str, datasets: list[str] | None = None, flag: str = "dataset",
                validates: bool = True) -> DataConfig:
    """validates: --split_dataset_ratio holds out a share of the rows (--dataset always; a joint SFT set that
    validates)."""
    datasets = args.dataset if datasets is None else datasets
    primary = flag == "dataset"  # --val_dataset and --dataset_probs belong to --dataset, not to --sft_dataset
    if not datasets:
        raise RlhfxError(f"No training data given for --{flag}.",
                         f"pass --{flag} (a registry name like {'demo-sft' if kind == 'sft' else 'demo-pref'}, a file, or a hub id).")
    return DataConfig(
        datasets=datasets, kind=kind, dataset_probs=args.dataset_probs if primary else None,
        val_datasets=args.val_dataset if primary else None,
        split_dataset_ratio=args.split_dataset_ratio if validates else 0.0, seed=args.seed,
        max_samples=args.max_samples if primary else args.sft_max_samples,
        prompt_key=args.prompt_key, chosen_key=args.chosen_key, rejected_key=args.rejected_key,
        response_key=args.response_key, label_key=args.label_key, messages_key=args.messages_key,
        columns=args.columns, system=args.system, input_template=args.input_template, num_proc=args.dataset_num_proc,
        model_name=args.model_name, model_author=args.model_author,
        desirable_threshold=args.values.get("desirable_threshold"))


POSITIVE_INTS = ("batch_size", "eval_batch_size", "train_batch_size", "gradient_accumulation_steps", "lora_rank",
                 "lora_alpha", "max_length", "logging_steps")
FRACTIONS = ("lora_dropout", "warmup_ratio")


def check_flags(args) -> None:
    for name in POSITIVE_INTS:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(args, name)}.", "use a positive number.")
    for name in ("save_steps", "eval_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1 and getattr(args, name) != -1:
            raise RlhfxError(f"--{name} is {getattr(args, name)}.", "use a positive number, or -1 for only at the end.")
    if args.max_steps < 1 and args.max_steps != -1:
        raise RlhfxError(f"--max_steps is {args.max_steps}.",
                         "use a positive number of steps, or -1 (the default) to let --num_train_epochs decide.")
    for name in ("learning_rate", "num_train_epochs"):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            raise RlhfxError(f"--{name} is {getattr(args, name)}.", "use a positive number.")
    for name in FRACTIONS:
        if not 0 <= getattr(args, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(args, name)}.", "use a value in [0, 1).")
    lora_flags = [f"--{name}" for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
                  if name in args.explicit]
    if args.train_type == "full" and lora_flags:
        raise RlhfxError(f"--train_type full trains every weight, but {', '.join(lora_flags)} {'configures' if len(lora_flags) == 1 else 'configure'} LoRA.",
                         "drop the LoRA flags, or use --train_type lora.")
    if args.dataset_probs and len(args.dataset_probs) != len(args.dataset or []):
        raise RlhfxError(f"--dataset_probs has {len(args.dataset_probs)} weights for {len(args.dataset or [])} datasets.",
                         "give one weight per --dataset.")
    if args.input_template and args.use_chat_template:
        raise RlhfxError("--input_template and --apply_chat_template/--use_chat_template both format the prompt.",
                         "choose one of them.")
    if args.input_template and "{}" not in args.input_template:
        raise RlhfxError(f"--input_template {args.input_template!r} has no {{}} placeholder for the prompt.",
                         "write it like 'User: {}\\nAssistant: '.")
    from rlhfx.training.checkpoints import resume_target
    from rlhfx.training.tracking import trackers

    trackers(args.report_to)
    if args.resume_from_checkpoint not in (None, "latest"):
        resume_target(args.resume_from_checkpoint, args.output_dir, Path())  # a wrong path fails before the model loads


def quiet_libraries() -> None:
    """Silence library progress bars and deprecation chatter; rlhfx prints its own progress."""
    import warnings

    import datasets
    import torch
    import transformers

    if not torch.cuda.is_available():  # DeepSpeed (if installed) would warn on import that it fell back to CPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def run(args, algo, options) -> Path:
    """Train `algo` (an rlhfx.algos.Algorithm record, looked up by rlhfx.algos.job) with its validated `options`."""
    from rlhfx.training.lock import RunLock
    from rlhfx.training.scale import apply_openrlhf_zero_flags, check_launch, deepspeed_config
    from rlhfx.training.tracking import apply_openrlhf_tracker_flags

    apply_openrlhf_zero_flags(args)
    apply_openrlhf_tracker_flags(args)
    check_flags(args)
    check_launch(args, deepspeed_config(args.deepspeed))
    output_dir, checkpoint = run_folder(args)
    with RunLock(output_dir) if is_main_process() else contextlib.nullcontext():
        return train(args, algo, options, output_dir, checkpoint)


def train(args, algo, options, output_dir: Path, checkpoint: Path | None) -> Path:
    """The run proper, in its (locked) output folder."""
    from transformers import PrinterCallback, set_seed

    from rlhfx.training.callbacks import FirstEvaluation, MetricsWriter, RichProgress
    from rlhfx.training.checkpoints import (StopIfTrained, TrainingComplete, checkpoint_step, disk_full_error,
                                            is_disk_full, load_extra_state, logged_train_loss, newest_checkpoint,
                                            rewind_metrics, stage_checkpoints, training_done)
    from rlhfx.training.guards import NonFiniteGuard, StopOnSignal
    from rlhfx.training.encode import encode_rows, make_encoder
    from rlhfx.training.hf_args import hf_training_kwargs
    from rlhfx.models import load_policy, load_reference, lora_config, tied_targets
    from rlhfx.training.ranks import check_ranks_agree, end_ranks
    from rlhfx.training.tracking import prepare_tracking, trackers

    quiet_libraries()
    set_seed(args.seed)
    algo_name = algo.name
    train_rows, val_rows, report = load_data(data_config(args, algo.kind))
    joint = options.joint_sft() if options is not None else None
    if joint:
        sft_rows, sft_val_rows, sft_report = load_data(data_config(args, "sft", joint.datasets, joint.flag,
                                                                   joint.validates))
        report.merge(sft_report)
    driver = bool(getattr(options, "ray_address", None))  # the Ray actors hold the models; this process drives them
    policy = load_policy(args, algo.model_class, weights=not driver)
    from rlhfx.models import run_args

    encoder, template = make_encoder(args, policy.tokenizer, policy.model_type, run_args(policy.path))
    train_dataset = encode_rows(algo.kind, train_rows, encoder, args.max_length, report, "train")
    eval_dataset = encode_rows(algo.kind, val_rows, encoder, args.max_length, report, "val") if val_rows else None
    sft_train, sft_eval = None, None
    if joint:
        sft_max_length = joint.max_len or args.max_length
        sft_train = encode_rows("sft", sft_rows, encoder, sft_max_length, report, f"{joint.flag} train")
        sft_eval = (encode_rows("sft", sft_val_rows, encoder, sft_max_length, report, f"{joint.flag} val")
                    if sft_val_rows and joint.validates else None)

    learning_rate = args.learning_rate or algo.default_lr(args.train_type)
    metrics_path = output_dir / "metrics.jsonl"
    before = {}  # held-out metrics before training; on resume, the first run's, read back from metrics.jsonl
    if is_main_process():
        record = redact({**args.to_dict(), "rlhf_type": algo_name, "model_path": policy.path,
                         "model_type": policy.model_type.name,
                         "template": template.name, "template_reason": template.reason,
                         "learning_rate": learning_rate})
        if checkpoint:
            say(f"resuming from {checkpoint}")
            note_changed_flags(output_dir / "args.json", record)
            before = rewind_metrics(metrics_path, checkpoint_step(checkpoint), training_done(checkpoint))
        elif metrics_path.exists():  # a killed run that saved no checkpoint: its rows are not this run's
            say(f"starting over in {output_dir}: the unfinished run there saved no checkpoint")
            metrics_path.unlink()
        write_json_atomic(output_dir / "args.json", record)
        write_json_atomic(output_dir / "data_report.json", report.to_dict())
    say(f"[bold]rlhfx {algo_name}[/bold]  model {policy.path} ({policy.model_type.name})  "
        f"train {len(train_dataset)} rows, val {len(eval_dataset) if eval_dataset else 0} rows  -> {output_dir}")
    say(f"  template: {template.describe()}")
    if template.thinking_note:
        say(f"[yellow]note:[/yellow] {template.thinking_note}")
    for line in report.summary_lines():
        say(f"  data: {line}")

    ref_model = load_reference(args, policy.model) if algo.needs_reference and not driver else None
    prepare_tracking(trackers(args.report_to), output_dir, args.use_tensorboard)
    progress, stop, guard = RichProgress(), StopOnSignal(), NonFiniteGuard(lambda: newest_checkpoint(output_dir))
    merges = getattr(args, "engine", None) == "vllm" or driver  # weights pushed into engines
    peft_config = lora_config(args, policy.model, policy.model_type, algo.lora_on_head, merges)
    tied = tied_targets(policy.model, peft_config.target_modules) if peft_config else ""
    if tied:
        say(f"[yellow]note:[/yellow] the adapter on {tied} trains, but this model ties its input embeddings and output "
            "head to one weight, so it cannot be merged (export --merge_lora refuses it): load it unmerged with PEFT.")
    ctx = RunContext(
        args=args, options=options, algorithm=algo, model=policy.model, ref_model=ref_model, tokenizer=policy.tokenizer,
        peft_config=peft_config, train_dataset=train_dataset,
        eval_dataset=eval_dataset, hf_args=hf_training_kwargs(args, output_dir, learning_rate, eval_dataset is not None),
        callbacks=[MetricsWriter(metrics_path), progress, stop, guard],
        sft_train_dataset=sft_train, sft_eval_dataset=sft_eval, encoder=encoder)
    trainer = algo.build_trainer(ctx)
    guard.watch(trainer)
    trainer.remove_callback(PrinterCallback)  # the rich bar and metrics.jsonl replace its raw dict prints
    own_loop = algo.own_training_loop
    if not own_loop:
        stage_checkpoints(trainer)

    first_eval = FirstEvaluation()
    if checkpoint:
        load_extra_state(trainer, checkpoint)
        if not own_loop:
            trainer.add_callback(StopIfTrained())
    elif eval_dataset is not None and own_loop:
        before = trainer.evaluate()
    elif eval_dataset is not None:
        # evaluated inside train(), once the model is wrapped (DDP, DeepSpeed): a Trainer evaluated before train()
        # marks the bare model as prepared, so accelerate never wraps it in DDP and every rank trains on its own
        trainer.args.eval_on_start = True
        trainer.add_callback(first_eval)
    start, cpu_start = time.time(), time.process_time()
    try:
        with stop:
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except TrainingComplete:  # resumed from the last step's checkpoint: only the final outputs were missing
        from transformers.trainer_utils import TrainOutput

        result = TrainOutput(trainer.state.global_step, logged_train_loss(metrics_path), {})
    finally:
        progress.stop()
    seconds, cpu_seconds = time.time() - start - first_eval.seconds, time.process_time() - cpu_start - first_eval.cpu_seconds
    if stop.signum is not None:
        raise interrupted(stop.signum, trainer.state.global_step, newest_checkpoint(output_dir), output_dir)
    before = before or first_eval.metrics
    after = trainer.evaluate() if eval_dataset is not None else {}
    rank_checksums = check_ranks_agree(trainer.model)
    try:
        trainer.save_model(str(output_dir))
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise disk_full_error("the final weights", output_dir, newest_checkpoint(output_dir)) from None
    if is_main_process():
        policy.tokenizer.save_pretrained(str(output_dir))
        if algo.writes_outputs:
            algo.trainer_module().write_outputs(output_dir, options, algo_name)
        finish(output_dir, algo_name, before, after, result, seconds, rank_checksums, cpu_seconds, checkpoint)
    end_ranks()
    return output_dir


def run_folder(args) -> tuple[Path, Path | None]:
    """(output folder, checkpoint to resume from or None), before anything loads. A folder with checkpoints of an
    unfinished run is only continued when asked to, never overwritten by a fresh start; a model folder or a folder
    of the user's that is not an rlhfx run is not written into (rlhfx.training.outputs.check_output_folder)."""
    from rlhfx.training.checkpoints import complete_checkpoints, resume_target
    from rlhfx.models import check_model_source, policy_model_type, resolve_model_path

    model = resolve_model_path(args.model, args.model_type)
    check_model_source(model)
    model_type = policy_model_type(args, model).name
    if args.resume_from_checkpoint:
        output_dir, checkpoint = resume_target(args.resume_from_checkpoint, args.output_dir, default_root(model_type))
    else:
        output_dir, checkpoint = resolve_output_dir(args.output_dir, model_type), None
    if (output_dir / "summary.json").exists():
        raise RlhfxError(f"{output_dir} already holds a finished run.", "pick another --output_dir.")
    if checkpoint is None and complete_checkpoints(output_dir):
        raise RlhfxError(f"{output_dir} holds checkpoints of an unfinished run.",
                         "continue it with --resume_from_checkpoint latest, or pick another --output_dir.")
    others = [getattr(args, name, None) for name in ("ref_model", "teacher_model", "critic_model")]
    check_output_folder(output_dir, [model, *others, *(getattr(args, "reward_model", None) or [])],
                        args.overwrite_output_dir)
    return output_dir, checkpoint


def note_changed_flags(file: Path, record: dict) -> None:
    """A resume with other flags than the interrupted run's is allowed, but is then not the same run: say which.
    (The learning rate and schedule come back from the checkpoint's scheduler whatever the flags say.)"""
    import json

    if not file.is_file():
        return
    old = json.loads(file.read_text())
    ignore = {"resume_from_checkpoint", "output_dir"}
    changed = [f"--{k} {old[k]} -> {v}" for k, v in record.items() if k in old and old[k] != v and k not in ignore]
    if changed:
        say("[yellow]note:[/yellow] resuming with flags changed since the checkpoint: " + ", ".join(changed))


def interrupted(signum: int, step: int, checkpoint: Path | None, output_dir: Path):
    import signal

    from rlhfx.training.guards import Interrupted

    name = signal.Signals(signum).name
    saved = f"checkpoint {checkpoint} saved" if checkpoint else "no checkpoint saved"
    return Interrupted(signum, f"{name} received: training stopped at step {step}, {saved}; the run is not finished "
                              "(no summary.json).",
                       f"continue it: the same command with --output_dir {output_dir} --resume_from_checkpoint latest.")


def finish(output_dir: Path, algo_name: str, before: dict, after: dict, result, seconds: float,
           rank_checksums: list[float] | None, cpu_seconds: float | None = None,
           resumed_from: Path | None = None) -> None:
    """Plot, summary table, and summary.json last, marking the run complete."""
    from rlhfx.training.plot import plot_curves

    plot = plot_curves(output_dir / "metrics.jsonl", output_dir / "curves.png", f"rlhfx {algo_name}")
    table = Table(title=f"rlhfx {algo_name}: held-out metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in SUMMARY_KEYS:
        if key in after:
            table.add_row(key.removeprefix("eval_"), f"{before.get(key, float('nan')):.4f}", f"{after[key]:.4f}")
    table.add_row("train loss (mean)", "", f"{result.training_loss:.4f}")
    table.add_row("steps / seconds", "", f"{result.global_step} / {seconds:.1f}")
    console.print(table)
    console.print(f"outputs in {output_dir}" + (f"  (curves: {plot})" if plot else ""))
    write_json_atomic(output_dir / "summary.json", {
        "rlhf_type": algo_name, "before": before, "after": after, "train_loss": result.training_loss,
        "global_step": result.global_step, "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds, "rank_weight_checksums": rank_checksums,
        "resumed_from": str(resumed_from) if resumed_from else None})
