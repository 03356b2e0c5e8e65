"""Every training flag, declared once: name, seed aliases, type, default, help, and which commands take it.

Both seed dialects map onto one name (ms-swift `--sft_type` and `--train_type`, OpenRLHF `--pretrain`
and ms-swift `--model` ...). `--config run.yaml` supplies defaults whose keys are flag names or
aliases; flags on the command line win. Nothing heavy is imported here: `rlhfx --help` stays fast.
"""

import argparse
import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlhfx.algos import ALGOS
from rlhfx.algos.options import default_of
from rlhfx.errors import RlhfxError

TRAIN = ("sft", "rlhf")
RLHF = ("rlhf",)


@dataclass(frozen=True)
class Flag:
    name: str
    type: type
    default: object
    help: str
    aliases: tuple[str, ...] = ()
    group: str = "training"
    commands: tuple[str, ...] = TRAIN
    choices: tuple[str, ...] | None = None
    is_list: bool = False
    algos: tuple[str, ...] | None = None  # the --rlhf_type values it matters for; None = all


# The algorithm records (rlhfx.algos) name the algorithms, their default learning rates and their options, from
# which the "algorithm" flag rows below are generated.
WITH_REFERENCE = tuple(n for n, a in ALGOS.items() if a.needs_reference)
PAIRWISE_REF = tuple(n for n, a in ALGOS.items() if a.loss and a.needs_reference)  # the pairwise trainer's reference
RL = tuple(n for n, a in ALGOS.items() if a.kind == "prompt")  # the online RL trainer and its presets


def rate(value: float) -> str:
    """A learning rate as people write it: 2e-4."""
    return f"{value:.0e}".replace("e-0", "e-")


def learning_rate_help() -> str:
    """--learning_rate's help: each algorithm's defaults, algorithms with the same ones together."""
    groups: dict[tuple[float, float], list[str]] = {}
    for name, algo in ALGOS.items():
        groups.setdefault((algo.lr_lora, algo.lr_full), []).append(name)
    listed = "; ".join(f"{rate(lora)} / {rate(full)} for {', '.join(names)}" for (lora, full), names in groups.items())
    return f"Peak learning rate (default by algorithm, LoRA / full: {listed})."


def _flag_type(annotation) -> tuple[type, bool]:
    """(the flag's value type, whether it is a list) of an option field's annotation: float, str | None, list[str] ..."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return args[0], True
    if args:  # X | None
        return _flag_type(args[0])
    return annotation, False


def _listed(by_value: dict) -> str:
    return "; ".join(f"{', '.join(names)}: {str(value).rstrip('.')}" for value, names in by_value.items())


def algorithm_flags() -> list[Flag]:
    """One flag row per option field name over every algorithm's options class. A field several algorithms declare
    (beta) gets one row stating each one's help and default (those without one, None, left out); their type,
    aliases and group must agree."""
    uses: dict[str, list] = {}
    for algo in ALGOS.values():
        for f in dataclasses.fields(algo.options) if algo.options else ():
            uses.setdefault(f.name, []).append((algo.name, f))
    rows = []
    for name, declared in uses.items():
        first = declared[0][1]
        (kind, is_list), meta = _flag_type(first.type), first.metadata
        for _, f in declared:
            same = (_flag_type(f.type), f.metadata["aliases"], f.metadata["group"], f.metadata["commands"])
            assert same == ((kind, is_list), meta["aliases"], meta["group"], meta["commands"]), name
        algos = tuple(a for a, _ in declared)
        helps: dict[str, list[str]] = {}
        defaults: dict[object, list[str]] = {}
        for algo, f in declared:
            helps.setdefault(f.metadata["help"], []).append(algo)
            default = default_of(f)
            defaults.setdefault(tuple(default) if isinstance(default, list) else default, []).append(algo)
        text = next(iter(helps)) if len(helps) == 1 else _listed(helps) + "."
        choices = tuple(dict.fromkeys(c for _, f in declared for c in f.metadata["choices"] or ())) or None
        default = default_of(first)
        if len(defaults) > 1:
            default = None
            text += f" (default: {_listed({v: names for v, names in defaults.items() if v is not None})})"
        rows.append(Flag(name, kind, default, text, meta["aliases"], meta["group"], meta["commands"], choices, is_list,
                         algos))
    return rows


FLAGS: list[Flag] = [
    # model
    Flag("model", str, None, "Hub id, local folder, or `tiny` (the embedded model).", ("pretrain", "model_id_or_path"), "model"),
    Flag("model_type", str, None, "Model family from the registry (llama3, qwen2, ..., ms-swift names like llama3-8b-instruct work); detected from --model when omitted.", (), "model"),
    Flag("template", str, None, "Chat template name overriding the model type's (chatml, qwen2, qwen2.5, llama2, llama3, llama3.1, llama3.2, mistral, gemma, phi3, deepseek, default).", (), "model"),
    Flag("use_chat_template", bool, False, "Render with the tokenizer's own chat_template (the default for models the registry does not know); the loss mask comes from its {% generation %} markers, else from rendering the conversation prefix by prefix.", ("apply_chat_template",), "model"),
    Flag("enable_thinking", bool, None, "ms-swift: the thinking switch of hybrid-thinking chat templates (Qwen3's ...), passed as enable_thinking to a tokenizer chat_template that reads it when prompts are rendered for training, sampling and inference (default: the template's own); with a template that does not read it, a note says it changes nothing.", (), "model"),
    Flag("ref_model", str, None, "Reference model for DPO and KTO (default: frozen copy of --model, or the adapter-disabled base under LoRA).", ("ref_pretrain",), "model", RLHF, algos=WITH_REFERENCE),
    Flag("torch_dtype", str, "auto", "Weights dtype: auto (float32 on CPU; bfloat16 on GPUs that support it, except weights fully trained without DeepSpeed: float32, with --bf16 autocasting their matmuls), float32, bfloat16, float16.", ("dtype",), "model", choices=("auto", "float32", "bfloat16", "float16")),
    # adapters
    Flag("train_type", str, "lora", "full or lora (ms-swift's --tuner_type; its older names --train_type, --sft_type).", ("sft_type", "tuner_type"), "adapter", choices=("full", "lora")),
    Flag("lora_rank", int, 8, "LoRA rank.", ("lora_r",), "adapter"),
    Flag("lora_alpha", int, 32, "LoRA alpha.", (), "adapter"),
    Flag("lora_dropout", float, 0.05, "LoRA dropout.", (), "adapter"),
    Flag("lora_target_modules", str, "ALL", "ALL (every Linear but the output head), DEFAULT (the registry's attention projections), or names.", ("target_modules", "target_module"), "adapter", is_list=True),
    # data
    Flag("dataset", str, None, "Datasets: registry names, hub ids (org/name[:subset][#N]), .json/.jsonl/.csv/.parquet files, json@DIR. Space or comma separated. pipeline: the prompts, one set per iteration or one set sliced by --rollout_batch_size.", ("datasets", "rlhf_dataset", "prompt_data"), "data", is_list=True),
    Flag("val_dataset", str, None, "Held-out datasets (same forms as --dataset).", ("eval_dataset",), "data", is_list=True),
    Flag("dataset_probs", float, None, "Mixing weights, one per --dataset.", (), "data", is_list=True),
    Flag("split_dataset_ratio", float, 0.0, "Share of training rows held out for validation when no --val_dataset is given.", (), "data"),
    Flag("max_samples", int, None, "Cap on training rows after mixing.", ("rlhf_max_samples",), "data"),
    Flag("max_length", int, 512, "Longest tokenized sequence; longer rows are dropped and counted.", ("max_len", "rlhf_max_len"), "data"),
    Flag("prompt_key", str, None, "Column holding the prompt.", ("input_key",), "data"),
    Flag("chosen_key", str, None, "Column holding the chosen response.", (), "data"),
    Flag("rejected_key", str, None, "Column holding the rejected response.", (), "data"),
    Flag("response_key", str, None, "Column holding the response.", ("output_key",), "data"),
    Flag("label_key", str, None, "Column holding the label.", (), "data"),
    Flag("messages_key", str, None, "Column holding a message list.", (), "data"),
    Flag("columns", str, None, "ms-swift: renames of dataset columns as JSON, '{\"old\": \"new\"}', applied to every row before it is read (e.g. '{\"answer\": \"solution\"}'); the --*_key flags win for a column both name.", (), "data"),
    Flag("system", str, None, "System prompt for rows that have none.", (), "data"),
    Flag("input_template", str, None, "Raw prompt format such as 'User: {}\\nAssistant: ' instead of a chat template.", (), "data"),
    Flag("dataset_num_proc", int, None, "Processes datasets uses to prepare hub datasets (its num_proc; default: one).", (), "data"),
    Flag("load_from_cache_file", bool, None, "ms-swift: reuse datasets' cache of its preprocessing. rlhfx keeps no preprocessing cache (rows are read and encoded afresh every run), so true and false give the same data; accepted with a note.", (), "data"),
    Flag("model_name", str, None, "Self-cognition data: replaces {{NAME}} in the rows; two values = Chinese and English name (rows tagged zh take the first).", (), "data", is_list=True),
    Flag("model_author", str, None, "Self-cognition data: replaces {{AUTHOR}} in the rows; two values = Chinese and English author (rows tagged zh take the first).", (), "data", is_list=True),
    Flag("train_on", str, "all", "Which assistant turns SFT learns: all or last.", (), "data", choices=("all", "last")),
    # optimisation
    Flag("learning_rate", float, None, learning_rate_help(), ("lr", "actor_learning_rate")),
    Flag("num_train_epochs", float, 1.0, "Epochs over the training data.", ("max_epochs",)),
    Flag("max_steps", int, -1, "Stop after this many optimizer steps (overrides epochs; -1: no cap).", ()),
    Flag("batch_size", int, 1, "Per-device micro batch size (kto: default 2; infer and sample: prompts per generation batch, default 16).", ("per_device_train_batch_size", "micro_train_batch_size", "rlhf_micro_train_batch_size")),
    Flag("eval_batch_size", int, None, "Per-device eval batch size (default: --batch_size).", ("per_device_eval_batch_size", "micro_eval_batch_size")),
    Flag("train_batch_size", int, None, "Global batch size; sets gradient accumulation = train_batch_size / (batch_size x world size).", ()),
    Flag("gradient_accumulation_steps", int, None, "Micro batches per optimizer step.", ()),
    Flag("warmup_ratio", float, 0.0, "Share of steps for linear warmup.", ()),
    Flag("weight_decay", float, 0.0, "AdamW weight decay.", ()),
    Flag("lr_scheduler_type", str, "cosine", "Learning-rate schedule (cosine, linear, constant, ...).", ()),
    Flag("max_grad_norm", float, 1.0, "Gradient clipping norm.", ()),
    Flag("gradient_checkpointing", bool, False, "Recompute activations in backward to save memory.", ()),
    Flag("bf16", bool, None, "bfloat16 mixed precision (default: on for CUDA GPUs that support it, off on CPU).", ()),
    Flag("seed", int, 42, "Random seed.", ()),
    # scale and memory (docs/distributed.md)
    Flag("deepspeed", str, None, "DeepSpeed preset zero0|zero1|zero2|zero3|zero2_offload|zero3_offload, or a config .json ('auto' fields come from the batch/lr flags).", (), "scale"),
    Flag("zero_stage", int, None, "OpenRLHF's spelling of --deepspeed: --zero_stage N = --deepspeed zeroN.", (), "scale", choices=(0, 1, 2, 3)),
    Flag("adam_offload", bool, False, "OpenRLHF: optimizer states in CPU memory; with ZeRO stage 2 or 3 picks the zero2_offload / zero3_offload preset (zero3_offload offloads the weights too).", (), "scale"),
    Flag("device_map", str, None, "Spread one model over the visible GPUs (auto, balanced, sequential): naive model parallel in a single process.", (), "scale"),
    Flag("packing_samples", bool, False, "Padding-free batches: sft packs whole samples into rows of --max_length; dpo and rm lay each micro batch end to end in rows of --max_length; online RL lays each forward's micro batch end to end in one row (same log-probs and loss).", ("packing", "padding_free"), "scale", algos=("dpo", "rm", *RL)),
    Flag("flash_attn", bool, False, "FlashAttention 2 kernels (needs the flash_attn package and a CUDA GPU).", ("use_flash_attn",), "scale"),
    Flag("attn_impl", str, None, "ms-swift: attention kernels: flash_attn / flash_attention_2 (= --flash_attn), sdpa or eager (default: transformers' choice, sdpa).", (), "scale", choices=("flash_attn", "flash_attention_2", "sdpa", "eager")),
    Flag("sequence_parallel_size", int, 1, "ms-swift: GPUs each sequence is split over (Ulysses sequence parallelism); rlhfx keeps every sequence on one device, so it takes 1 only.", (), "scale"),
    Flag("dataloader_num_workers", int, 0, "Worker processes loading training batches (0: the training process itself).", (), "scale"),
    Flag("quant_bits", int, None, "Load the base model quantised to 4 or 8 bits (QLoRA through bitsandbytes, CUDA only); needs --train_type lora.", (), "scale", choices=(4, 8)),
    Flag("quant_method", str, None, "ms-swift: the library --quant_bits quantises with; rlhfx has bitsandbytes (bnb) only.", (), "scale", choices=("bnb",)),
    Flag("bnb_4bit_quant_type", str, "nf4", "--quant_bits 4: bitsandbytes' 4-bit data type, nf4 (NormalFloat) or fp4.", (), "scale", choices=("nf4", "fp4")),
    Flag("load_in_4bit", bool, False, "Same as --quant_bits 4 (OpenRLHF).", (), "scale"),
    Flag("precompute_ref_log_probs", bool, False, "Compute the reference log-probs once before training, so no reference model stays in memory.", (), "scale", RLHF, algos=PAIRWISE_REF),
    Flag("ref_offload", bool, False, "Keep the reference model on the CPU between its forwards (GPU runs; OpenRLHF).", (), "scale", RLHF, algos=PAIRWISE_REF),
    Flag("aux_loss_coef", float, None, "Weight of the MoE router load-balancing loss (default: the model config's router_aux_loss_coef).", ("router_aux_loss_coef",), "scale", algos=PAIRWISE_REF),
    # outputs
    Flag("output_dir", str, None, "Output folder (default: output/<model_type>/v<N>-<timestamp>).", ("save_path",), "output"),
    Flag("overwrite_output_dir", bool, False, "Write into an --output_dir that is a model folder the run reads or holds files that are not an rlhfx run (refused by default: weights and README.md would be overwritten).", (), "output"),
    Flag("save_steps", int, 500, "Checkpoint every N steps.", (), "output"),
    Flag("save_strategy", str, None, "ms-swift / transformers: steps (every --save_steps: the default), epoch (at each epoch's end) or no (= --save_steps -1: final weights only).", (), "output", choices=("steps", "epoch", "no")),
    Flag("eval_strategy", str, None, "ms-swift / transformers: steps (every --eval_steps), epoch (at each epoch's end) or no (only before and after training).", ("evaluation_strategy",), "output", choices=("steps", "epoch", "no")),
    Flag("save_total_limit", int, 2, "Checkpoints kept.", (), "output"),
    Flag("save_only_model", bool, False, "Checkpoints hold the weights only, no optimizer/scheduler/RNG state (smaller; such a checkpoint cannot be resumed).", (), "output"),
    Flag("logging_steps", int, 5, "Log every N steps.", (), "output"),
    Flag("eval_steps", int, None, "Evaluate every N steps (default: at the end only).", (), "output"),
    Flag("report_to", str, "none", "Trackers: none, tensorboard, wandb.", (), "output", is_list=True),
    Flag("use_wandb", str, None, "OpenRLHF: report to wandb; the value is your W&B API key (not recorded in args.json), or True for the key `wandb login` saved.", (), "output"),
    Flag("use_tensorboard", str, None, "OpenRLHF: report to tensorboard, writing the event files to this folder (default with --report_to: <output_dir>/runs).", (), "output"),
    Flag("resume_from_checkpoint", str, None, "Resume training: PATH of a checkpoint-N folder, or `latest` (the newest complete checkpoint in --output_dir).", (), "output"),
    # preference losses
    Flag("rlhf_type", str, "dpo", f"Algorithm: {', '.join(n for n in ALGOS if n != 'sft')}.", (), "algorithm", RLHF),
    *algorithm_flags(),
]


# --- generation: `rlhfx infer` and `rlhfx sample` (engines, sampling, reward scoring, post-processors) ---------
GENERATE = ("infer", "sample")
# Flags above that mean the same for generation; they are taken by these commands as well.
_SHARED_WITH_GENERATION = {
    "model": GENERATE, "model_type": GENERATE, "template": GENERATE, "use_chat_template": GENERATE,
    "enable_thinking": GENERATE,
    "torch_dtype": GENERATE, "dataset": GENERATE, "val_dataset": ("infer",), "max_samples": GENERATE,
    "prompt_key": GENERATE, "label_key": GENERATE, "messages_key": GENERATE, "columns": GENERATE, "system": GENERATE,
    "input_template": GENERATE, "seed": GENERATE, "batch_size": GENERATE,
}


_GENERATION_ALIASES = {"batch_size": ("micro_batch_size",)}  # OpenRLHF batch_inference's name


# `rlhfx export` and `rlhfx data check` take these flags of the tables above and below, meaning the same.
TOOLS = ("export", "data")
_SHARED_WITH_TOOLS = {
    "model": TOOLS, "model_type": TOOLS, "template": TOOLS, "use_chat_template": TOOLS, "enable_thinking": ("data",),
    "torch_dtype": ("export",),
    "output_dir": ("export",), "adapters": ("export",), "dataset": ("data",), "max_length": ("data",),
    "max_samples": ("data",), "seed": ("data",), "prompt_key": ("data",), "chosen_key": ("data",),
    "rejected_key": ("data",), "response_key": ("data",), "label_key": ("data",), "messages_key": ("data",),
    "columns": ("data",),
    "system": ("data",), "input_template": ("data",), "rlhf_type": ("data",), "train_on": ("data",),
    "dataset_num_proc": ("data",), "model_name": ("data",), "model_author": ("data",),
}


def _share(flag: Flag) -> Flag:
    from dataclasses import replace

    extra = _SHARED_WITH_GENERATION.get(flag.name, ()) + _SHARED_WITH_TOOLS.get(flag.name, ())
    if not extra:
        return flag
    aliases = flag.aliases + tuple(a for a in _GENERATION_ALIASES.get(flag.name, ()) if a not in flag.aliases)
    return replace(flag, commands=flag.commands + tuple(c for c in extra if c not in flag.commands), aliases=aliases)


FLAGS = [_share(f) for f in FLAGS] + [_share(f) for f in [
    Flag("engine", str, "pt", "Generation engine: pt (transformers generate) or vllm (needs the vllm extra).", (), "generation", GENERATE, choices=("pt", "vllm")),
    Flag("adapters", str, None, "Output folder of an rlhfx run: its LoRA adapter goes onto --model (default: the base it was trained from), or its full weights are the model; its args.json gives the template.", ("ckpt_dir",), "generation", GENERATE),
    Flag("max_new_tokens", int, 128, "Most tokens generated per answer.", ("generate_max_len",), "generation", GENERATE),
    Flag("temperature", float, 1.0, "Sampling temperature (0 = greedy).", (), "generation", GENERATE),
    Flag("top_p", float, 1.0, "Nucleus sampling: keep the smallest token set with this much probability (1 = off).", (), "generation", GENERATE),
    Flag("top_k", int, 0, "Sample among the k most likely tokens (0 or -1 = off).", (), "generation", GENERATE),
    Flag("repetition_penalty", float, 1.0, "Penalty on tokens already in the text (1 = off).", (), "generation", GENERATE),
    Flag("greedy", bool, False, "Greedy decoding (same as --temperature 0): every sample of a prompt is the same.", ("greedy_sampling",), "generation", GENERATE),
    Flag("best_of_n", int, 1, "Samples per prompt.", ("n_samples_per_prompt", "num_return_sequences"), "generation", GENERATE),
    Flag("tp_size", int, 1, "vllm: tensor-parallel GPUs.", ("tensor_parallel_size", "vllm_tensor_parallel_size"), "generation", GENERATE),
    Flag("enable_prefix_caching", bool, False, "vllm: reuse the KV cache of shared prompt prefixes.", (), "generation", GENERATE),
    Flag("max_num_seqs", int, None, "vllm: most sequences in one scheduler step (default: vLLM's).", (), "generation", GENERATE),
    Flag("gpu_memory_utilization", float, 0.9, "vllm: share of GPU memory for weights and KV cache.", ("vllm_gpu_memory_utilization",), "generation", GENERATE),
    Flag("kv_cache_memory_gb", float, None, "vllm: KV cache size in GiB (default on CPU: 1; on GPU: from --gpu_memory_utilization).", (), "generation", GENERATE),
    Flag("input_file", str, None, "infer batch mode: prompts from a .txt file (one per line) or a data file (.jsonl/.json/.csv/.parquet).", (), "generation", ("infer",)),
    Flag("output_file", str, None, "JSONL results (default: output/infer/<time>.jsonl, output/sample/<task>-<time>.jsonl).", ("output_path",), "generation", GENERATE),
    Flag("task", str, "generate", "sample: generate (best_of_n answers per prompt) or rm (score a generated file); OpenRLHF's generate_vllm = generate --engine vllm.", ("eval_task",), "sampling", ("sample",), choices=("generate", "generate_vllm", "rm")),
    Flag("iter", int, 0, "sample: iteration i takes prompts [i * rollout_batch_size, (i + 1) * rollout_batch_size).", (), "sampling", ("sample",)),
    Flag("rollout_batch_size", int, None, "sample: prompts per iteration (default: all).", (), "sampling", ("sample",)),
    Flag("reward_model", str, None, "sample: reward model folder (a sequence-classification model with one label, e.g. an rlhfx rm run) scoring each answer.", (), "sampling", ("sample",)),
    Flag("reward_func", str, None, "sample: rule-based reward: a named one (accuracy, format, cosine, repetition, soft_overlong; their knobs are online RL's: --cosine_max_len ...), `demo`, or a .py file defining reward_func(queries, prompts, labels) -> list[float].", (), "sampling", ("sample",)),
    Flag("normalize_reward", bool, False, "sample: z-normalise the rewards over all scored answers.", (), "sampling", ("sample",)),
    Flag("post_processor", str, None, "sample: turn scored answers into training data: rs (best per prompt -> SFT), csft (reward-conditioned SFT), iter_dpo (best vs worst pairs).", (), "sampling", ("sample",), choices=("rs", "csft", "iter_dpo")),
    Flag("reward_template", str, "{input} <rm_score>: {reward} ", "sample csft: how the reward is written into the prompt.", (), "sampling", ("sample",)),
]] + [
    Flag("merge_lora", bool, False, "export: merge the run's LoRA adapter into its base weights (a plain from_pretrained folder).", (), "export", ("export",)),
    Flag("kind", str, None, "data check: the row kind to check for (sft, pairwise, unpaired, prompt, process) instead of --rlhf_type's.", (), "data", ("data",), choices=("sft", "pairwise", "unpaired", "prompt", "process")),
]


# --- loops: `rlhfx pipeline rs|iterative_dpo|csft` take the flags of the stages they run (rlhfx.loops) ----------
# set by the loop itself, or about reading a training data file when the loop writes its own
_SET_BY_LOOPS = {"task", "iter", "output_file", "post_processor", "rlhf_type", "adapters", "input_file", "ref_model",
                 "val_dataset", "dataset_probs", "split_dataset_ratio", "chosen_key", "rejected_key", "response_key"}


def _taken_by_loops(flag: Flag) -> bool:
    stage = "sample" in flag.commands or "sft" in flag.commands or (flag.algos is not None and "dpo" in flag.algos)
    return stage and flag.name not in _SET_BY_LOOPS


def _add_pipeline(flag: Flag) -> Flag:
    from dataclasses import replace

    return replace(flag, commands=flag.commands + ("pipeline",)) if _taken_by_loops(flag) else flag


LOOP = ("pipeline",)
FLAGS = [_add_pipeline(f) for f in FLAGS] + [
    Flag("training_iters", int, 3, "pipeline: iterations (generate, score, train) to run; a finished loop re-run with a higher number goes on.", (), "loop", LOOP),
    Flag("ref_mode", str, "initial", "pipeline iterative_dpo: DPO reference = the initial model pi_0 (RLHFlow) or the previous iteration's policy.", (), "loop", LOOP, choices=("initial", "previous")),
]


# --- `rlhfx rollout`: a generation server for --vllm_mode server (rlhfx.commands.rollout) ----------------------
ROLLOUT = ("rollout",)
_SHARED_WITH_ROLLOUT = {"model", "model_type", "torch_dtype", "seed", "tp_size", "gpu_memory_utilization",
                        "kv_cache_memory_gb", "max_num_seqs", "enable_prefix_caching"}
FLAGS = [replace(f, commands=f.commands + ROLLOUT) if f.name in _SHARED_WITH_ROLLOUT else f for f in FLAGS] + [
    Flag("engine", str, "vllm", "rollout: the engine served: vllm, or pt (transformers generate: slower, for models vLLM does not run).", (), "rollout", ROLLOUT, choices=("vllm", "pt")),
    Flag("host", str, "127.0.0.1", "rollout: address to listen on (0.0.0.0: every interface, for trainers on other machines; the server has no authentication, keep it on a private network).", (), "rollout", ROLLOUT),
    Flag("port", int, 8000, "rollout: port to listen on (the trainer's --vllm_server_port).", (), "rollout", ROLLOUT),
    Flag("dp_size", int, 1, "rollout: data-parallel vLLM engines (only 1 in this version: start one server per engine).", ("data_parallel_size", "vllm_data_parallel_size"), "rollout", ROLLOUT),
    Flag("max_model_len", int, None, "rollout: longest prompt + response the engine holds (default: the model's).", ("vllm_max_model_len",), "rollout", ROLLOUT),
]


@dataclass
class Args:
    """Parsed flags: one attribute per Flag.name, plus the command and what the user set explicitly."""

    command: str
    values: dict
    explicit: set = field(default_factory=set)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return {"command": self.command, **self.values}


def flags_for(command: str) -> list[Flag]:
    return [f for f in FLAGS if command in f.commands]


def _to_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise RlhfxError(f"rlhfx {self.prog.split()[-1]}: {message}.", "see `rlhfx " + self.prog.split()[-1] + " --help`.")


def _build_parser(command: str) -> _Parser:
    parser = _Parser(prog=f"rlhfx {command}", add_help=False, allow_abbrev=False)
    for flag in flags_for(command):
        names = [f"--{flag.name}"] + [f"--{a}" for a in flag.aliases]
        kwargs = dict(dest=flag.name, default=argparse.SUPPRESS)
        if flag.type is bool:
            kwargs.update(nargs="?", const=True, type=_to_bool)
        elif flag.is_list:
            kwargs.update(nargs="+", type=str)
        else:
            kwargs.update(type=flag.type, choices=flag.choices)
        parser.add_argument(*names, **kwargs)
    parser.add_argument("--config", dest="config", default=None)
    return parser


def _split_list(flag: Flag, items) -> list:
    if isinstance(items, str):
        items = [items]
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    try:
        return [flag.type(p) for p in parts]
    except ValueError:
        raise RlhfxError(f"--{flag.name} expects {flag.type.__name__} values, got {items!r}.") from None


def _unknown_flag_error(command: str, token: str) -> RlhfxError:
    known = [f"--{n}" for f in flags_for(command) for n in (f.name, *f.aliases)] + ["--config"]
    name = token.split("=")[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"see `rlhfx {command} --help` for the flags."
    return RlhfxError(f"Unknown flag {name} for `rlhfx {command}`.", hint)


def _read_config(path: str, command: str) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise RlhfxError(f"Config file {path} does not exist.", "pass the path of a YAML file with flag names as keys.")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise RlhfxError(f"Config file {path} is not valid YAML: {error}.") from None
    if not isinstance(data, dict):
        raise RlhfxError(f"Config file {path} must be a mapping of flag names to values.")
    by_name = {n: f for f in flags_for(command) for n in (f.name, *f.aliases)}
    values = {}
    for key, value in data.items():
        flag = by_name.get(key)
        if flag is None:
            hint = _unknown_flag_error(command, f"--{key}").fix
            raise RlhfxError(f"Unknown key {key!r} in config file {path}.", hint)
        values[flag.name] = value
    return values


def _coerce(flag: Flag, value):
    if value is None:
        return None
    if flag.is_list:
        return _split_list(flag, value if isinstance(value, list) else [value])
    if flag.type is bool:
        try:
            return value if isinstance(value, bool) else _to_bool(value)
        except argparse.ArgumentTypeError as error:
            raise RlhfxError(f"--{flag.name}: {error}.", "write true or false.") from None
    # a YAML value of another type: 2.5 or true for an int flag would be cut to 2 or 1 without a word
    if isinstance(value, bool) and flag.type is not str or (
            flag.type is int and isinstance(value, float) and not value.is_integer()):
        raise RlhfxError(f"--{flag.name} expects {'an int' if flag.type is int else 'a ' + flag.type.__name__}, "
                         f"got {value!r}.", f"write a whole number for --{flag.name}." if flag.type is int else None)
    try:
        value = flag.type(value)
    except (TypeError, ValueError):
        raise RlhfxError(f"--{flag.name} expects a {flag.type.__name__}, got {value!r}.") from None
    if flag.choices and value not in flag.choices:
        raise RlhfxError(f"--{flag.name} must be one of {', '.join(flag.choices)}; got {value!r}.")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """`--lr -1e-4` -> `--lr=-1e-4`: argparse takes a value such as -1e-4 for an option and reports a missing value."""
    out = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and _is_number(token):
            out[-1] += "=" + token
        else:
            out.append(token)
    return out


def parse_args(command: str, argv: list[str]) -> Args:
    """Defaults < --config file < command line. Unknown flags fail with a did-you-mean suggestion."""
    parser = _build_parser(command)
    parsed, unknown = parser.parse_known_args(_attach_negative_numbers(argv))
    if unknown:
        raise _unknown_flag_error(command, next((u for u in unknown if u.startswith("-")), unknown[0]))
    cli_values = {k: v for k, v in vars(parsed).items() if k != "config"}
    file_values = _read_config(parsed.config, command) if parsed.config else {}
    values, explicit = {}, set(file_values) | set(cli_values)
    for flag in flags_for(command):
        raw = cli_values.get(flag.name, file_values.get(flag.name, flag.default))
        values[flag.name] = _coerce(flag, raw)
    return Args(command=command, values=values, explicit=explicit)


USAGE = {"export": "rlhfx export --adapters RUN --merge_lora [--output_dir OUT]",
         "data": "rlhfx data check --dataset DATA --rlhf_type TYPE [--model MODEL] [flags]",
         "rollout": "rlhfx rollout --model MODEL [--port 8000] [--host 127.0.0.1] [--tp_size N] [flags]"}


def print_help(command: str, summary: str, algo: str | None = None) -> None:
    """Flags grouped by purpose, aliases shown next to each name; with `algo`, only the flags that matter for it."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"rlhfx {command}" + (f" --rlhf_type {algo}" if algo else "")
    console.print(f"[bold]{title}[/bold]: {summary}\n")
    usage = USAGE.get(command, f"rlhfx {command} --model MODEL --dataset DATA [flags]")
    console.print(f"Usage: {usage} (or --config run.yaml)\n")
    groups: dict[str, list[Flag]] = {}
    for flag in flags_for(command):
        if algo is None or flag.algos is None or algo in flag.algos:
            groups.setdefault(flag.group, []).append(flag)
    record = ALGOS[algo or command] if (algo or command) in ALGOS else None
    own = {f.name: f for f in dataclasses.fields(record.options)} if record and record.options else {}
    for group, flags in groups.items():
        table = Table(title=group, title_justify="left", show_header=False, box=None, padding=(0, 2))
        for flag in flags:
            names = ", ".join(f"--{n}" for n in (flag.name, *flag.aliases))
            text, default = flag.help, flag.default
            if flag.name in own:  # the algorithm's own help and default, not every algorithm's
                text, default = own[flag.name].metadata["help"], own[flag.name].default
            if flag.name == "learning_rate" and record:
                text = (f"Peak learning rate (default for {record.name}: {rate(record.lr_lora)} LoRA, "
                        f"{rate(record.lr_full)} full).")
            table.add_row(names, text + ("" if default is None else f" (default: {default})"))  # [..] is rich markup
        console.print(table)
    sys.stdout.flush()
