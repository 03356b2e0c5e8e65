"""Regenerate docs/migrating-from-ms-swift.md and docs/migrating-from-openrlhf.md (tests/test_docs.py checks them).

The seed flags below are every trainer flag used in the seed documents (/work/shared/seeds: ms-swift's RLHF
scripts; OpenRLHF's README, non-RL methods and XRIGHT's OpenRLHF-based scripts), without launcher options
(deepspeed, ray, docker). Each maps to the rlhfx flag that has it as its name or alias in rlhfx/arguments.py;
a flag rlhfx does not take is listed with what to do instead (UNSUPPORTED).
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's rlhfx
sys.path.insert(0, str(ROOT / "tests"))  # the ms-swift example table that tests/test_swift_examples.py runs
from rlhfx.arguments import FLAGS  # noqa: E402
from swift_examples import EXAMPLES  # noqa: E402

SWIFT_FLAGS = ["model_id_or_path", "model_type", "sft_type", "train_type", "rlhf_type", "dataset", "val_dataset",
               "num_train_epochs", "learning_rate", "batch_size", "gradient_accumulation_steps", "warmup_ratio",
               "gradient_checkpointing", "lora_target_modules", "lora_rank", "lora_alpha", "max_length", "output_dir",
               "save_total_limit", "beta", "rpo_alpha", "desirable_weight", "undesirable_weight", "simpo_gamma",
               "reward_model_type", "reward_model_id_or_path", "ckpt_dir", "merge_lora"]
SWIFT_FLAGS += [n for n in dict.fromkeys(re.findall(r"--(\w+)", "".join(e.script for e in EXAMPLES)))
                if n not in SWIFT_FLAGS]  # and every flag of ms-swift's example scripts
OPENRLHF_FLAGS = ["pretrain", "ref_pretrain", "dataset", "dataset_probs", "max_samples", "input_key", "output_key",
                  "prompt_key", "chosen_key", "rejected_key", "label_key", "input_template", "apply_chat_template",
                  "tokenizer_chat_template", "max_len", "prompt_max_len", "train_batch_size", "micro_train_batch_size",
                  "max_epochs", "learning_rate", "beta", "label_smoothing", "ipo", "nll_loss_coef", "lora_rank",
                  "lora_alpha", "target_modules", "bf16", "gradient_checkpointing", "save_path", "save_steps",
                  "logging_steps", "eval_steps", "use_wandb", "use_tensorboard", "load_checkpoint", "zero_stage",
                  "flash_attn", "packing_samples", "adam_offload", "ref_offload", "overlap_comm", "load_in_4bit",
                  "aux_loss_coef", "value_head_prefix", "teacher_model", "kd_coef", "teacher_offload",
                  # batch_inference
                  "eval_task", "output_path", "micro_batch_size", "max_new_tokens", "temperature", "top_p",
                  "repetition_penalty", "greedy_sampling", "best_of_n", "tp_size", "max_num_seqs",
                  "enable_prefix_caching", "iter", "rollout_batch_size", "post_processor", "reward_template",
                  "normalize_reward",
                  # PPO / REINFORCE++ on Ray
                  "reward_pretrain", "critic_pretrain", "prompt_data", "prompt_data_probs", "remote_rm_url",
                  "advantage_estimator", "init_kl_coef", "n_samples_per_prompt", "generate_max_len",
                  "actor_learning_rate", "critic_learning_rate", "micro_rollout_batch_size", "vllm_num_engines",
                  "vllm_tensor_parallel_size", "vllm_sync_backend", "colocate_actor_ref", "colocate_critic_reward",
                  "actor_num_nodes", "actor_num_gpus_per_node", "critic_num_nodes", "critic_num_gpus_per_node",
                  "ref_num_nodes", "ref_num_gpus_per_node", "reward_num_nodes", "reward_num_gpus_per_node",
                  "ring_attn_size",
                  # XRIGHT's scripts
                  "rlhf_dataset", "sft_dataset", "rlhf_max_samples", "sft_max_samples", "rlhf_max_len", "sft_max_len",
                  "rlhf_micro_train_batch_size", "sft_micro_train_batch_size", "lambd", "sft_opt", "dpo_opt",
                  "max_eval_steps", "target_module", "eval_split", "rlhf_eval_split", "ref_pareto_sft", "ref_pareto_dpo"]
ISSUE_17 = "RL loss option: added by issue 17 (RL losses and trainer flags)."
UNSUPPORTED = {
    **{n: ISSUE_17 for n in ("epsilon", "epsilon_high", "overlong_filter", "kl_in_reward", "dynamic_sample",
                             "importance_sampling_level")},
    "reward_model_type": "Pass the reward model folder with --reward_model.",
    "reward_model_id_or_path": "Pass the reward model folder with --reward_model.",
    "prompt_data_probs": "Use --dataset_probs.",
    "overlap_comm": "The ZeRO presets (`--deepspeed zero2` ...) turn it on; to change it, pass a copy of a preset's JSON "
                    "to --deepspeed (rlhfx/configs/deepspeed/).",
    "ring_attn_size": "Ring attention (sequence parallelism) is not supported.",
    "value_head_prefix": "rlhfx reward models use the transformers `score` head (AutoModelForSequenceClassification).",
    "tokenizer_chat_template": "Pass --template NAME (rlhfx's templates) or --use_chat_template (the tokenizer's own).",
    "eval_split": "Held-out data comes from --val_dataset or --split_dataset_ratio (XRIGHT passes `dummy`: drop it).",
    "rlhf_eval_split": "Held-out data comes from --val_dataset or --split_dataset_ratio (XRIGHT passes `dummy`: drop it).",
    "ref_pareto_sft": "Plotting aids, not needed: every xright run plots its own trajectory (docs/algorithms/xright.md).",
    "ref_pareto_dpo": "Plotting aids, not needed: every xright run plots its own trajectory (docs/algorithms/xright.md).",
    "load_checkpoint": "Use --resume_from_checkpoint latest (the newest complete checkpoint in --output_dir) or a "
                       "checkpoint-N folder.",
}
NOTES = {  # supported, but the meaning or default differs from the other tool
    "tuner_type": "full or lora (ms-swift's other tuners are not supported).",
    "beta": "DPO family: the preference strength; grpo/ppo: the KL coefficient (= --kl_coef); gkd: the JSD mixture.",
    "load_from_cache_file": "Accepted with a note: rlhfx keeps no preprocessing cache, the data is the same either way.",
    "move_model_batches": "Accepted with a note: rlhfx hands the weights to vLLM tensor by tensor (colocate) or in "
                          "requests of at most 256 MiB (server); the batching changes no result.",
    "scale_rewards": "group (the group's std, the default), batch (the whole rollout's std), none (Dr. GRPO; = "
                     "--advantage_estimator dr_grpo); true = group, false = none. For group_norm (grpo); rloo takes "
                     "none.",
    "model_name": "Fills {{NAME}} in self-cognition rows (zh rows take the first of two values).",
    "model_author": "Fills {{AUTHOR}} in self-cognition rows (zh rows take the first of two values).",
    "attn_impl": "flash_attn/flash_attention_2 = --flash_attn (CUDA only), sdpa, eager.",
    "use_vllm": "= --engine vllm; --vllm_mode picks colocate (in the training process) or server.",
    "vllm_mode": "colocate, or server: `rlhfx rollout --model M --port P` (= `swift rollout`) serves the rollouts; "
                 "weights are pushed over HTTP after every update (no NCCL group yet).",
    "sleep_level": "GPU only (vLLM's sleep mode); refused on the CPU with a clear error.",
    "offload_model": "GPU only; refused on the CPU with a clear error.",
    "offload_optimizer": "GPU only; refused on the CPU with a clear error.",
    "multi_turn_scheduler": "Built in: math_tip_trick; more with --external_plugins (`from rlhfx.algos.rl.multi_turn "
                            "import MultiTurnScheduler, multi_turns`). The trainer runs the scheduler with every engine "
                            "(pt, vLLM colocate or server); ms-swift's gym and thinking schedulers are not built in.",
    "reward_funcs": "Built in: accuracy, format, cosine, repetition, soft_overlong (ms-swift's definitions), demo; "
                    "more with --external_plugins.",
    "external_plugins": "A Python file registering rewards: `from rlhfx.rewards.builtin import ORM, orms; "
                        "orms['name'] = MyReward`.",
    "system": "A path ending in .txt is read, as in ms-swift.",
    "enable_thinking": "Passed to a tokenizer chat_template that reads it (Qwen3's hybrid thinking); with a template "
                       "that does not, a note says it changes nothing.",
    "vllm_enable_lora": "Accepted with a note: the merged LoRA weights are pushed to vLLM every step instead; vLLM "
                        "samples the same policy.",
    "quant_method": "bnb only (bitsandbytes).",
    "bnb_4bit_quant_type": "nf4 or fp4, as in ms-swift.",
    "advantage_estimator": "ms-swift's names are taken: grpo = group_norm, rloo, reinforce_plus_plus = reinforce_baseline "
                           "(REINFORCE++-baseline); also reinforce, gae, dr_grpo.",
    "steps_per_generation": "Sets --rollout_batch_size to batch size x N / --num_generations prompts (TRL's rollout "
                            "size); rlhfx's --max_steps counts rollouts, not optimizer steps.",
    "save_strategy": "steps (the default) and no (= --save_steps -1); epoch with the Hugging Face trainers (online RL "
                     "refuses it: give --save_steps).",
    "eval_strategy": "steps (the default) and no (evaluation before and after training only); epoch with the Hugging "
                     "Face trainers (online RL refuses it).",
    "sequence_parallel_size": "1 only: rlhfx has no sequence parallelism (a larger value is refused: its processes "
                              "would train as data-parallel ranks, a larger batch).",
    "delta": "= --dual_clip (two-sided GRPO's cap on the ratio of negative advantages); at least 1 + --epsilon_high, "
             "where TRL's and OpenRLHF's definitions agree.",
    "chord_sft_dataset": "CHORD (docs/algorithms/chord.md): mu x the expert NLL mixed into (1 - mu) x the policy "
                         "loss, any online RL --rlhf_type; registry names, files and `NAME#N` as --dataset.",
    "chord_sft_per_device_train_batch_size": "Needed with --chord_sft_dataset (no default, as in ms-swift): expert "
                                             "rows per process and micro step.",
    "chord_mu_warmup_steps": "Counted in optimizer steps, as ms-swift's; needed with --chord_sft_dataset.",
    "chord_mu_decay_steps": "Counted in optimizer steps, as ms-swift's; needed with --chord_sft_dataset.",
    "async_generate": "false only: rollouts run before each step; true stops with a clear error.",
    "report_to": "tensorboard and wandb (not swanlab).",
    "lora_rank": "--train_type (default lora) chooses LoRA or full; a --lora_rank > 0 alone switches nothing "
                 "(OpenRLHF's convention), and LoRA flags with --train_type full are refused.",
    "save_steps": "-1 (OpenRLHF): no checkpoints, only the final weights.",
    "eval_steps": "-1 (OpenRLHF): evaluate only at the end.",
    "ckpt_dir": "`swift infer/export --ckpt_dir` = `rlhfx infer/export --adapters`.",
    "merge_lora": "`swift export --merge_lora true` = `rlhfx export --adapters RUN --merge_lora`.",
    "rlhf_type": "Same names: dpo, kto, cpo, orpo, simpo, rm, ppo; also prm, alright, maxright, mix, kd, grpo, rloo, reinforce_pp.",
    "max_epochs": "Passes over the data (OpenRLHF's PPO uses it for passes over each rollout: that is --num_ppo_epochs).",
    "prompt_max_len": "Online RL: longer prompts are dropped and counted.",
    "micro_batch_size": "batch_inference's batch size.",
    "vllm_num_engines": "With --ray_address: rollout engine actors (--engine pt, or vllm). Without Ray, --engine vllm "
                        "is one in-process engine.",
    "vllm_tensor_parallel_size": "vLLM's tensor parallelism (in-process, `rlhfx rollout`, or each Ray engine actor, "
                                 "whose workers all join the weight sync).",
    "vllm_sync_backend": "With --ray_address: how actor rank 0 broadcasts new weights to the engines' workers; default "
                         "nccl on GPUs, gloo on CPUs and with --colocate_all_models.",
    "actor_num_nodes": "With --ray_address (docs/distributed.md, Ray); a slot is a GPU, or --ray_cpus_per_slot CPUs "
                       "on a cluster without GPUs.",
    "colocate_critic_reward": "With --ray_address and --reward_model: the critic group on the reward model group's "
                              "slots (same counts).",
    "critic_num_nodes": "With --ray_address: the critic group's own data-parallel ranks beside the actor group's; "
                        "not given, the actor group's count (the reward group's with --colocate_critic_reward).",
    "critic_num_gpus_per_node": "As --critic_num_nodes.",
    "reward_num_nodes": "With --ray_address and --reward_model; reward functions run in the driver.",
    "prompt_data": "The prompts of online RL (`rlhfx rlhf --rlhf_type ppo`) and of `rlhfx pipeline` (one set per iteration, or one set sliced).",
}
COMMANDS = {
    "ms-swift": [("swift sft", "`rlhfx sft`"), ("swift rlhf --rlhf_type T", "`rlhfx rlhf --rlhf_type T`"),
                 ("swift infer", "`rlhfx infer`"), ("swift export --merge_lora true", "`rlhfx export --merge_lora`"),
                 ("swift rlhf --rlhf_type ppo", "`rlhfx rlhf --rlhf_type ppo` (docs/algorithms/ppo.md)"),
                 ("swift rollout", "`rlhfx rollout` (docs/distributed.md, vLLM colocate vs server)")],
    "OpenRLHF": [("openrlhf.cli.train_sft", "`rlhfx sft`"), ("openrlhf.cli.train_dpo", "`rlhfx rlhf --rlhf_type dpo`"),
                 ("openrlhf.cli.train_kto", "`rlhfx rlhf --rlhf_type kto`"),
                 ("openrlhf.cli.train_rm", "`rlhfx rlhf --rlhf_type rm`"),
                 ("openrlhf.cli.train_prm", "`rlhfx rlhf --rlhf_type prm`"),
                 ("openrlhf.cli.batch_inference", "`rlhfx sample` (and `rlhfx infer`)"),
                 ("ray job submit ... -- python3 -m openrlhf.cli.train_ppo_ray", "`ray job submit ... -- rlhfx rlhf --rlhf_type ppo --ray_address auto` (the roles as Ray actors on placement groups: below), or `NPROC_PER_NODE=N rlhfx rlhf --rlhf_type ppo` without Ray (torchrun; docs/distributed.md)"), ("openrlhf.cli.train_kd", "`rlhfx rlhf --rlhf_type kd`"),
                 ("rejection sampling / iterative DPO shell loops", "`rlhfx pipeline rs`, `rlhfx pipeline iterative_dpo`"),
                 ("deepspeed --module ... / torchrun", "`NPROC_PER_NODE=N rlhfx ...`")],
}
# Where the same flag or formula means something else in rlhfx: each a deliberate choice, pinned by a test and
# listed in docs/algorithms/ppo.md ("Conventions").
CONVENTIONS = {"OpenRLHF": [
    ("Group estimators with `--reward_clip_range`", "subtract the group baseline, then clip (rloo, rewards 30 and 20, "
     "clip 10: +10 and -10)", "clip each raw reward, then subtract the baseline (0 and 0): an outlier cannot move its "
     "group's baseline"),
    ("`--ipo`", "IPO on summed log-ratios", "the same (OpenRLHF's formula); `--loss_type ipo` is TRL's and ms-swift's "
     "IPO on per-token mean log-ratios"),
    ("`--kl_target` / `--target_kl`", "`--kl_target` compares the per-token mean KL", "`--target_kl` compares the "
     "sequence KL (summed over tokens, averaged over sequences; Ziegler et al., TRL): multiply an OpenRLHF target by "
     "the mean response length"),
    ("GAE lambda (`--lambd` / `--lam`)", "1.0", "0.95 (TRL, the PPO papers); pass `--lam 1` for OpenRLHF's"),
    ("`--value_clip`", "0.5", "0.2 (TRL); pass `--value_clip 0.5` for OpenRLHF's"),
    ("csft reward text", "two decimals (`<rm_score>: 5.00`)", "the same, so csft data and prompts carry over"),
]}
INTRO = """# Migrating from {tool}

rlhfx takes {tool}'s flag spellings as they are: most commands run after replacing the launcher and the command
name. The table covers every flag of {tool} used in rlhfx's seed documents; unknown flags fail with a
did-you-mean suggestion, never silently. See [cli.md](cli.md) for all flags and
[troubleshooting.md](troubleshooting.md) for what errors mean. Generated by `python scripts/gen_migrating_docs.py`.

| {tool} | rlhfx |
| --- | --- |
"""


def rlhfx_flags(name: str) -> list:
    """Every rlhfx flag taking `name` as its name or alias (one name can mean a flag of rlhf and one of sample)."""
    return [f for f in FLAGS if name == f.name or name in f.aliases]


def render(tool: str, names: list[str]) -> str:
    lines = [INTRO.format(tool=tool).rstrip("\n")]
    lines += [f"| `{theirs}` | {ours} |" for theirs, ours in COMMANDS[tool]]
    lines += ["", "## Flags", "", f"| {tool} flag | rlhfx flag | commands | note |", "| --- | --- | --- | --- |"]
    missing = []
    for name in names:
        flags = rlhfx_flags(name)
        if not flags:
            missing.append(name)
            continue
        same = "same name" if any(f.name == name for f in flags) else " / ".join(f"`--{f.name}`" for f in flags)
        commands = " ".join(dict.fromkeys(c for f in flags for c in f.commands))
        lines.append(f"| `--{name}` | {same} | {commands} | {NOTES.get(name, '')} |")
    lines += ["", f"## {tool} flags rlhfx does not take", "", "| flag | instead |", "| --- | --- |"]
    lines += [f"| `--{name}` | {UNSUPPORTED[name]} |" for name in missing]
    if tool in CONVENTIONS:
        lines += ["", "## Conventions that differ", "", f"| what | {tool} | rlhfx |", "| --- | --- | --- |"]
        lines += [f"| {what} | {theirs} | {ours} |" for what, theirs, ours in CONVENTIONS[tool]]
    if tool == "ms-swift":
        lines += examples_section()
    else:
        lines += ray_section()
    return "\n".join(lines) + "\n"


# The seed's Ray command (OpenRLHF's README), flag for flag; tests/test_rl_ray.py checks that RAY_RLHFX parses and
# resolves.
RAY_SEED = """ray job submit --address="http://127.0.0.1:8265" --runtime-env-json='{"working_dir": "/openrlhf"}' \\
   -- python3 -m openrlhf.cli.train_ppo_ray \\
   --ref_num_nodes 1 --ref_num_gpus_per_node 2 --reward_num_nodes 1 --reward_num_gpus_per_node 2 \\
   --critic_num_nodes 1 --critic_num_gpus_per_node 2 --actor_num_nodes 1 --actor_num_gpus_per_node 2 \\
   --vllm_num_engines 2 --vllm_tensor_parallel_size 2 --colocate_critic_reward --colocate_actor_ref \\
   --pretrain OpenRLHF/Llama-3-8b-sft-mixture --reward_pretrain OpenRLHF/Llama-3-8b-rm-mixture \\
   --save_path /openrlhf/examples/checkpoint/llama3-8b-rlhf --micro_train_batch_size 8 --train_batch_size 128 \\
   --micro_rollout_batch_size 16 --rollout_batch_size 1024 --max_samples 100000 --max_epochs 1 \\
   --prompt_max_len 1024 --generate_max_len 1024 --zero_stage 3 --bf16 --actor_learning_rate 5e-7 \\
   --critic_learning_rate 9e-6 --init_kl_coef 0.01 --prompt_data OpenRLHF/prompt-collection-v0.1 \\
   --input_key context_messages --apply_chat_template --normalize_reward --packing_samples --adam_offload \\
   --flash_attn --gradient_checkpointing --use_wandb {wandb_token}"""
RAY_RLHFX = ["--rlhf_type", "ppo", "--ray_address", "auto", "--ref_num_nodes", "1", "--ref_num_gpus_per_node", "2",
             "--reward_num_nodes", "1", "--reward_num_gpus_per_node", "2", "--critic_num_nodes", "1",
             "--critic_num_gpus_per_node", "2", "--actor_num_nodes", "1", "--actor_num_gpus_per_node", "2",
             "--engine", "vllm", "--vllm_num_engines", "2", "--vllm_tensor_parallel_size", "2",
             "--colocate_critic_reward", "--colocate_actor_ref",
             "--pretrain", "OpenRLHF/Llama-3-8b-sft-mixture", "--reward_pretrain", "OpenRLHF/Llama-3-8b-rm-mixture", "--save_path",
             "/openrlhf/examples/checkpoint/llama3-8b-rlhf", "--micro_train_batch_size", "8", "--train_batch_size",
             "128", "--micro_rollout_batch_size", "16", "--rollout_batch_size", "1024", "--max_samples", "100000",
             "--max_epochs", "1", "--prompt_max_len", "1024", "--generate_max_len", "1024", "--zero_stage", "3",
             "--bf16", "--actor_learning_rate", "5e-7", "--critic_learning_rate", "9e-6", "--init_kl_coef", "0.01",
             "--prompt_data", "OpenRLHF/prompt-collection-v0.1", "--input_key", "context_messages",
             "--apply_chat_template", "--normalize_reward", "--packing_samples", "--adam_offload", "--flash_attn",
             "--gradient_checkpointing", "--use_wandb", "{wandb_token}"]


def ray_section() -> list[str]:
    """OpenRLHF's `ray job submit` command and the rlhfx command that places the same roles."""
    lines, command = [], ""
    for i, token in enumerate(RAY_RLHFX):  # two flags a line
        new_line = token.startswith("--") and i and sum(t.startswith("--") for t in RAY_RLHFX[:i]) % 2 == 0
        command += (" \\\n   " if new_line else " ") + token
    lines += ["", "## OpenRLHF's Ray commands", "",
              "The seed's `ray job submit` command (OpenRLHF's README) and the rlhfx command that places the same "
              "roles on the same Ray cluster (docs/distributed.md, \"torchrun, server mode or Ray\"): the job runs "
              "the rlhfx driver, which connects with `--ray_address auto`; `--rlhf_type ppo` is train_ppo_ray's "
              "default estimator (gae), and its note's `--advantage_estimator reinforce | rloo` are `--rlhf_type "
              "reinforce_pp | rloo` (or that flag as it is).", "", "```bash", "# OpenRLHF", RAY_SEED, "",
              "# rlhfx", 'ray job submit --address="http://127.0.0.1:8265" -- rlhfx rlhf' + command, "```"]
    return lines


def examples_section() -> list[str]:
    """What each of ms-swift's example scripts does under rlhfx (tests/test_swift_examples.py runs each)."""
    lines = ["", "## ms-swift's example scripts", "",
             "Each script below, from ms-swift's examples/train/, with only `swift` -> `rlhfx`, the model and data "
             "swapped for `tiny` and demo data and `--max_steps 1` added, is run by tests/test_swift_examples.py "
             "(the texts are in tests/swift_examples.py).", "",
             "| script | on rlhfx | why |", "| --- | --- | --- |"]
    for example in EXAMPLES:
        result = "runs" if example.expect == "runs" else f"stops: `{example.expect}`"
        why = example.why + "." if example.why else ""
        lines.append(f"| {example.path} | {result} | {why} |")
    return lines


PAGES = {"migrating-from-ms-swift.md": ("ms-swift", SWIFT_FLAGS), "migrating-from-openrlhf.md": ("OpenRLHF", OPENRLHF_FLAGS)}

if __name__ == "__main__":
    for page, (tool, names) in PAGES.items():
        (ROOT / "docs" / page).write_text(render(tool, names))
