"""ms-swift flags that stand for another rlhfx setting, mapped onto it right after parsing (before any check).

--use_vllm true = --engine vllm (--vllm_mode colocate or server); TRL's --vllm_enable_sleep = --sleep_level 1;
--attn_impl flash_attn = --flash_attn; --system FILE.txt reads the file (as ms-swift does); online RL's --beta =
--kl_coef; ms-swift's --advantage_estimator names; TRL's --scale_rewards true / false = group / none;
--save_strategy and --eval_strategy no = no checkpoints / evaluations during training. Flags whose effect rlhfx has
by construction are accepted with a one-line note saying so. Nothing heavy is imported here.
"""

import os
from pathlib import Path

from rlhfx.errors import RlhfxError

RL = ("ppo", "grpo", "rloo", "reinforce_pp")
# ms-swift's --advantage_estimator values: grpo is GRPO's group normalisation; reinforce_plus_plus is REINFORCE++-baseline
# (the group mean subtracted, then one std over the whole batch), OpenRLHF's and rlhfx's reinforce_baseline
ESTIMATORS = {"grpo": "group_norm", "reinforce_plus_plus": "reinforce_baseline"}
NOTES = {
    "load_from_cache_file": "rlhfx keeps no preprocessing cache: rows are read and encoded afresh every run, so the "
                            "data is the same either way.",
    "move_model_batches": "rlhfx hands the weights to vLLM tensor by tensor (colocate) or in requests of at most "
                          "256 MiB (server), never the whole model at once; the batching changes no result.",
    "vllm_enable_lora": "rlhfx pushes the LoRA adapter merged into the weights to vLLM every step; vLLM samples "
                        "the same policy as with the adapter loaded.",
}
# TRL's boolean spellings of --scale_rewards
SCALE_REWARDS = {"true": "group", "false": "none"}


def apply_swift_flags(args) -> list[str]:
    """Rewrite args.values in place; returns the notes to print (one line per flag)."""
    values, explicit = args.values, args.explicit
    _vllm(values, explicit)
    if values.get("attn_impl") in ("flash_attn", "flash_attention_2"):
        values["flash_attn"] = True
    system = values.get("system")
    if system and system.endswith(".txt"):
        if not Path(system).is_file():
            raise RlhfxError(f"--system {system} names a .txt file that does not exist.",
                             "fix the path, or pass the system prompt itself.")
        values["system"] = Path(system).read_text(encoding="utf-8")
    if values.get("advantage_estimator") in ESTIMATORS:
        values["advantage_estimator"] = ESTIMATORS[values["advantage_estimator"]]
    if values.get("scale_rewards") in SCALE_REWARDS:
        values["scale_rewards"] = SCALE_REWARDS[values["scale_rewards"]]
    if values.get("async_generate"):
        raise RlhfxError("--async_generate true (the next rollout generated while this one trains, one step "
                         "off-policy, on ms-swift's vLLM server) is not available in rlhfx.",
                         "drop it or pass --async_generate false: rollouts then run before each step, on-policy.")
    if values.get("sequence_parallel_size", 1) > 1:
        size = values["sequence_parallel_size"]
        raise RlhfxError(f"--sequence_parallel_size {size} splits each sequence over {size} GPUs (ms-swift's Ulysses "
                         "sequence parallelism), which rlhfx does not do: its processes would each hold whole "
                         f"sequences and train as data-parallel ranks, a {size}x larger batch.",
                         f"drop it (or pass 1); for ms-swift's batch run {size}x fewer processes or a {size}x smaller "
                         "--per_device_train_batch_size; --gradient_checkpointing or --deepspeed zero3 save memory.")
    _strategies(values)
    if "beta" in explicit and values.get("rlhf_type") in RL:
        if "kl_coef" in explicit and values["kl_coef"] != values["beta"]:
            raise RlhfxError(f"--beta {values['beta']} and --kl_coef {values['kl_coef']} both set the KL coefficient "
                             "of online RL.", "give one of them.")
        values["kl_coef"] = values["beta"]
        explicit.add("kl_coef")
    return [f"--{name}: {note}" for name, note in NOTES.items() if name in explicit]


def _strategies(values: dict) -> None:
    """--save_strategy / --eval_strategy: steps is rlhfx's way already; no is --save_steps -1 (final weights only) and
    --eval_steps unset (evaluation before and after training only); epoch reaches the Hugging Face trainers
    (rlhfx.training.hf_args), the online RL loop counts steps only."""
    for kind, steps, never in (("save", "save_steps", -1), ("eval", "eval_steps", None)):
        strategy = values.get(f"{kind}_strategy")
        if strategy == "no":
            values[steps] = never
        elif strategy == "epoch" and values.get("rlhf_type") in RL:
            raise RlhfxError(f"--{kind}_strategy epoch: online RL ({values['rlhf_type']}) counts rollouts, not epochs.",
                             f"give --{steps} N (N = training prompts / --rollout_batch_size is one epoch).")


def rollout_prompts(args, n_samples_per_prompt: int) -> int:
    """--rollout_batch_size for TRL / ms-swift's --steps_per_generation S: their rollout is batch_size x S completions
    (one process) cut into S micro batches, S / gradient_accumulation optimizer steps per pass; rlhfx's rollout of
    P prompts x n samples is cut into optimizer batches of batch_size x gradient accumulation, so P = batch_size x S / n."""
    steps, n = args.steps_per_generation, n_samples_per_prompt
    completions = args.batch_size * steps
    if steps < 1 or completions % n:
        raise RlhfxError(f"--steps_per_generation {steps} x --per_device_train_batch_size {args.batch_size} = "
                         f"{completions} completions per rollout, not a multiple of --num_generations {n}.",
                         "make batch size x steps_per_generation a multiple of num_generations.")
    prompts = completions // n
    if "rollout_batch_size" in args.explicit and args.rollout_batch_size != prompts:
        raise RlhfxError(f"--steps_per_generation {steps} means --rollout_batch_size {prompts} ({completions} "
                         f"completions / {n} per prompt), not {args.rollout_batch_size}.", "give one of them.")
    return prompts


def _vllm(values: dict, explicit: set) -> None:
    if "use_vllm" not in values:
        return
    if values["vllm_enable_sleep"]:  # TRL's name for vLLM's sleep mode: --sleep_level 1
        if "sleep_level" in explicit and values["sleep_level"] == 0:
            raise RlhfxError("--vllm_enable_sleep true and --sleep_level 0 contradict each other.", "give one of them.")
        values["sleep_level"] = values["sleep_level"] or 1
        explicit.add("sleep_level")
    if values["vllm_mode"] is not None and not values["use_vllm"] and values["engine"] != "vllm":
        raise RlhfxError(f"--vllm_mode {values['vllm_mode']} is given without --use_vllm true.",
                         "add --use_vllm true (or --engine vllm), or drop --vllm_mode.")
    if not values["use_vllm"]:
        return
    if "engine" in explicit and values["engine"] != "vllm":
        raise RlhfxError(f"--use_vllm true and --engine {values['engine']} disagree.", "give one of them.")
    values["engine"] = "vllm"


def print_notes(notes: list[str]) -> None:
    if notes and int(os.environ.get("RANK", "0")) == 0:
        from rich.console import Console

        for note in notes:
            Console().print(f"[yellow]note:[/yellow] {note}", highlight=False)
