"""ms-swift's example training scripts as its users run them: the table behind tests/test_swift_examples.py and the
example section of docs/migrating-from-ms-swift.md (scripts/gen_migrating_docs.py).

Each `script` is the text of `path` in github.com/modelscope/ms-swift (examples/train/, main as of December 2026) with
only `swift` -> `rlhfx`, the model (and teacher/reward model) swapped for `tiny` (`rm` for the reward model), the
datasets swapped for small demo files that the test writes (sft.jsonl, pref.jsonl, kto.jsonl, prompts.jsonl,
math.jsonl: rows of demo-sft, demo-pref, demo-kto, demo-prompts, demo-math; gsm8k.jsonl: demo-math's sums in
GSM8K's layout, the answer in `answer` after ####) and `--max_steps 1` added.
The test runs each in a folder that also holds the files the scripts name (examples/train/grpo/prompt.txt, the
plugins: tests/gsm8k_plugin.py for ms-swift's GSM8K one), with `bash -e`.

expect: "runs" (exit 0, summary.json written), or words of the clear error it stops at; `why` says why.
slow: grpo/internal/transformers.sh rolls out 64 completions of up to 1024 tokens in bfloat16, which the CPU
emulates: more than 20 minutes on a loaded 2-core machine.
examples/train/grpo/internal/full_lmdeploy.sh holds no command (LMDeploy rollouts were removed in ms-swift 3.5).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    path: str
    script: str
    expect: str
    why: str = ""
    slow: bool = False  # longer than a few minutes on 2 CPU cores: run with -m slow


EXAMPLES = [
    Example('examples/train/lora_sft.sh',
            r'''# 22GB
# qwen3: https://github.com/modelscope/ms-swift/blob/main/examples/train/think_model/qwen3_demo1.sh
CUDA_VISIBLE_DEVICES=0 \
rlhfx sft \
    --model tiny \
    --tuner_type lora \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps 16 \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataset_num_proc 4 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/full/train.sh',
            r'''# 76GiB
CUDA_VISIBLE_DEVICES=0 \
rlhfx sft \
    --model tiny \
    --tuner_type full \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 16 \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/tuners/lora/train.sh',
            r'''# 17.2GiB
CUDA_VISIBLE_DEVICES=0 \
rlhfx sft \
    --model tiny \
    --tuner_type lora \
    --dataset sft.jsonl \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --gradient_accumulation_steps 16 \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --model_author swift \
    --model_name swift-robot \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/multi-gpu/deepspeed/train_zero2.sh',
            r'''# 18GiB * 2
nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx sft \
    --model tiny \
    --tuner_type lora \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --deepspeed zero2 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/base_to_chat/full.sh',
            r'''nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx sft \
    --model tiny \
    --tuner_type full \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --num_train_epochs 10 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 200 \
    --save_steps 200 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --deepspeed zero2 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/base_to_chat/lora.sh',
            r'''# Use `--template default`
nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
MASTER_PORT=29501 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx sft \
    --model tiny \
    --tuner_type lora \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --template default \
    --num_train_epochs 10 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --deepspeed zero2 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/base_to_chat/lora2.sh',
            r'''# Use `--target_modules all-linear embed_tokens lm_head`
# Please adjust the `lm_head` according to the model.
nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx sft \
    --model tiny \
    --tuner_type lora \
    --dataset sft.jsonl \
    --torch_dtype bfloat16 \
    --num_train_epochs 10 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear embed_tokens lm_head \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --system 'You are a helpful assistant.' \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --model_author swift \
    --model_name swift-robot \
    --deepspeed zero2 \
    --max_steps 1
''',
            'includes the output head lm_head',
            why="TRL's SFTTrainer computes the log-probabilities from lm_head.weight (its fused LM head) and refuses a LoRA "
                "adapter there, so does rlhfx sft; rlhfx's online RL (ppo, grpo, ...) trains one where the head has its own "
                "weight (the script itself says to adjust lm_head to the model; tiny ties it to embed_tokens, and an "
                "adapter there could not be merged)"),
    Example('examples/train/rlhf/dpo/lora.sh',
            r'''# 24GiB
# It is recommended to use padding_free. For more details, please refer to:
# https://github.com/modelscope/ms-swift/blob/main/examples/train/padding_free/dpo.sh
CUDA_VISIBLE_DEVICES=0 \
rlhfx rlhf \
    --rlhf_type dpo \
    --model tiny \
    --tuner_type lora \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps 16 \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --rpo_alpha 0.1 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/rlhf/dpo/full.sh',
            r'''# with padding_free: 4 * 47GiB, 1.90s/it
# without padding_free: 4 * 57GiB 3.32s/it
NPROC_PER_NODE=4 \
CUDA_VISIBLE_DEVICES=0,1,2,3 \
rlhfx rlhf \
    --rlhf_type dpo \
    --model tiny \
    --tuner_type full \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 1 \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 8192 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --save_only_model true \
    --dataloader_num_workers 4 \
    --dataset_num_proc 4 \
    --deepspeed zero3 \
    --attn_impl flash_attn \
    --rpo_alpha 0.1 \
    --padding_free true \
    --max_steps 1
''',
            '--attn_impl flash_attn needs a CUDA GPU',
            why='GPU only: FlashAttention kernels'),
    Example('examples/train/packing/dpo.sh',
            r'''# 4 * 50GiB; 2h
PYTORCH_CUDA_ALLOC_CONF='expandable_segments:True' \
NPROC_PER_NODE=4 \
CUDA_VISIBLE_DEVICES=0,1,2,3 \
rlhfx rlhf \
    --rlhf_type dpo \
    --model tiny \
    --tuner_type full \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 1 \
    --eval_steps 200 \
    --save_steps 200 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 8192 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --save_only_model true \
    --dataloader_num_workers 4 \
    --dataset_num_proc 4 \
    --deepspeed zero3 \
    --attn_impl flash_attn \
    --rpo_alpha 0.1 \
    --packing true \
    --max_steps 1
''',
            '--attn_impl flash_attn needs a CUDA GPU',
            why='GPU only: FlashAttention kernels'),
    Example('examples/train/rlhf/kto.sh',
            r'''nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type kto \
    --model tiny \
    --tuner_type lora \
    --dataset kto.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs', why="a micro batch of 1: each row's KL reference point uses another row's completion of the dataset"),
    Example('examples/train/rlhf/cpo.sh',
            r'''nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type cpo \
    --model tiny \
    --tuner_type lora \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/rlhf/orpo.sh',
            r'''nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type orpo \
    --model tiny \
    --tuner_type lora \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/rlhf/simpo.sh',
            r'''# 2*50GB
nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type simpo \
    --model tiny \
    --tuner_type full \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/rlhf/rm/train.sh',
            r'''nproc_per_node=2

CUDA_VISIBLE_DEVICES=0,1 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type rm \
    --model tiny \
    --tuner_type lora \
    --dataset pref.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-4 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --dataset_num_proc 4 \
    --max_steps 1
''',
            'runs'),
    Example('examples/train/rlhf/ppo/lora.sh',
            r'''# 4 * 50GiB
# Currently, it only supports the case where the model and reward_model use the same template/tokenizer.
# Currently, multimodal model PPO is not supported.

# pip install "deepspeed==0.14.*"
nproc_per_node=4

PYTORCH_CUDA_ALLOC_CONF='expandable_segments:True' \
CUDA_VISIBLE_DEVICES=0,1,2,3 \
NPROC_PER_NODE=$nproc_per_node \
rlhfx rlhf \
    --rlhf_type ppo \
    --model tiny \
    --reward_model rm \
    --tuner_type lora \
    --dataset prompts.jsonl math.jsonl \
    --load_from_cache_file true \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-5 \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --gradient_accumulation_steps $(expr 16 / $nproc_per_node) \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero2 \
    --response_length 512 \
    --temperature 0.7 \
    --dataset_num_proc 4 \
    --save_only_model true \
    --max_steps 1
''',
            'runs',
            why="its --reward_model is a reward model its user trained first: here `rm`, 2 steps of rlhfx rlhf --rlhf_type rm on the tiny model (test_swift_examples.py); 4 processes, ZeRO-2, LoRA"),
    Example('examples/train/rlhf/gkd/full.sh',
            r'''# 4 * 66GiB, 46s/it
NPROC_PER_NODE=4 \
PYTORCH_CUDA_ALLOC_CONF='expandable_segments:True' \
CUDA_VISIBLE_DEVICES=0,1,2,3 \
rlhfx rlhf \
    --rlhf_type gkd \
    --model tiny \
    --teacher_model tiny \
    --tuner_type full \
    --dataset sft.jsonl 'AI-ModelScope/alpaca-gpt4-data-zh#2000' \
    --split_dataset_ratio 0.01 \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 1 \
    --eval_steps 50 \
    --save_steps 50 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --max_completion_length 512 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --save_only_model true \
    --dataloader_num_workers 4 \
    --dataset_num_proc 4 \
    --deepspeed zero3 \
    --attn_impl flash_attn \
    --max_steps 1
''',
            '--attn_impl flash_attn needs a CUDA GPU',
            why='GPU only: FlashAttention kernels'),
    Example('examples/train/grpo/internal/chord.sh',
            r'''# 8*80G GPU
# CHORD https://arxiv.org/abs/2508.11408
# GRPO total batch = 32(prompts)*8(num_generations) = 256 =  8(gpus) * 4(per_device_train_batch_size) * 8(gradient_accumulation_steps)
# SFT total batch = 64 = 8(gpus) * 1(chord_sft_per_device_train_batch_size) * 8(gradient_accumulation_steps)

# NOTE: We use the same dataset for GRPO and SFT, which may cause overlap (i.e., the same examples to be selected).
# You can pre-download the dataset and manually split it to avoid this.

export CHORD_SYSTEM_PROMPT="You are a helpful assistant that solves MATH problems.
You should first think about the reasoning process in mind and then provide the user with the answer.
You should present your reasoning process using the format: <think>\n...your reasoning process here... </think>\n"

CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --torch_dtype bfloat16 \
    --beta 0.0 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 8 \
    --chord_sft_per_device_train_batch_size 1 \
    --chord_sft_dataset 'demo-sft#64' \
    --chord_enable_phi_function false \
    --chord_mu_warmup_steps 0 \
    --chord_mu_decay_steps 200 \
    --chord_mu_peak 0.9 \
    --chord_mu_valley 0.05 \
    --num_generations 8 \
    --tuner_type full \
    --reward_funcs accuracy \
    --system "$CHORD_SYSTEM_PROMPT" \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.4 \
    --vllm_max_model_len 8192 \
    --max_completion_length 4096 \
    --overlong_filter true \
    --offload_optimizer true \
    --offload_model true \
    --sleep_level 1 \
    --save_steps 1000 \
    --learning_rate 1e-6 \
    --save_total_limit 2 \
    --logging_steps 1 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero3 \
    --log_completions true \
    --report_to tensorboard swanlab \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="every CHORD flag is taken (docs/algorithms/chord.md); vLLM's sleep mode frees GPU memory, and "
                "there is no GPU here"),
    Example('examples/train/grpo/internal/fipo.sh',
            r'''CUDA_VISIBLE_DEVICES=2 \
rlhfx rollout \
    --model tiny

# 2 GPUS for sequence parallel
NPROC_PER_NODE=2 \
CUDA_VISIBLE_DEVICES=0,1 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --dataset math.jsonl  \
    --reward_funcs accuracy \
    --use_vllm true \
    --vllm_mode server \
    --vllm_server_host 127.0.0.1 \
    --vllm_server_port 8000 \
    --tuner_type full \
    --torch_dtype bfloat16 \
    --load_from_cache_file true \
    --max_completion_length 4096 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 8 \
    --learning_rate 1e-6 \
    --gradient_accumulation_steps 2 \
    --save_total_limit 3 \
    --save_steps 500 \
    --logging_steps 1 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 8 \
    --num_generations 8 \
    --temperature 1.0 \
    --system """You are a helpful math assistant. Solve the problem step by step and put your final answer within \\boxed{}.""" \
    --log_completions true \
    --num_iterations 3 \
    --padding_free true \
    --sequence_parallel_size 2 \
    --attn_impl flash_attn \
    --beta 0 \
    --dynamic_sample true \
    --loss_type fipo \
    --delta 10.0 \
    --epsilon_high 0.28 \
    --fipo_decay_rate 32 \
    --fipo_clip_range 0.2 \
    --fipo_clip_high_only false \
    --fipo_safety_threshold 3.0 \
    --max_steps 1
''',
            'needs vLLM, which cannot be imported here',
            why="its first line starts `rlhfx rollout` (vLLM: in .venv-vllm it serves until stopped, as in ms-swift's second terminal); its trainer command (--loss_type fipo, --delta, --fipo_*, --dynamic_sample) trains 1 step on the CPU (its --padding_free packed) without the server and its GPU flags, and --sequence_parallel_size 2 and --attn_impl flash_attn each stop it with their own error (test_swift_examples.py)"),
    Example('examples/train/grpo/internal/gspo.sh',
            r'''# 8*80G GPU
# GSPO https://arxiv.org/pdf/2507.18071
# hyperparameter
# - epsilon = 3e-4 from paper serction 5.1
# - epsilon_high = 4e-4 from paper serction 5.1
# - steps_per_generation = 32 (= 4 * gradient_accumulation_steps): paper section 5.1 partitions each batch of rollout data into four minibatches for gradient updates; in swift HF GRPO, steps_per_generation counts micro-batches, so it must be multiplied by gradient_accumulation_steps
# - beta = 0: zero kl regularization https://github.com/volcengine/verl/pull/2775#issuecomment-3131807306

CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --torch_dtype bfloat16 \
    --beta 0.0 \
    --epsilon 3e-4 \
    --epsilon_high 4e-4 \
    --steps_per_generation 32 \
    --importance_sampling_level sequence \
    --num_train_epochs 1 \
    --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 8 \
    --num_generations 16 \
    --tuner_type full \
    --reward_funcs accuracy \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.6 \
    --vllm_max_model_len 16384 \
    --max_completion_length 8192 \
    --offload_optimizer true \
    --offload_model true \
    --sleep_level 1 \
    --save_steps 1000 \
    --learning_rate 1e-6 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --deepspeed zero3 \
    --log_completions true \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here"),
    Example('examples/train/grpo/internal/moe_full.sh',
            r'''# 8*80G

CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --reward_funcs accuracy \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.4 \
    --vllm_tensor_parallel_size 2 \
    --vllm_max_model_len 16384 \
    --tuner_type full \
    --torch_dtype bfloat16 \
    --dataset math.jsonl \
    --max_length 12000 \
    --max_completion_length 8192 \
    --overlong_filter true \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --learning_rate 1e-6 \
    --gradient_accumulation_steps 4 \
    --save_strategy 'steps' \
    --eval_strategy 'steps' \
    --eval_steps 1000 \
    --save_steps 1000 \
    --save_total_limit 10 \
    --logging_steps 1 \
    --warmup_ratio 0.01 \
    --dataloader_num_workers 4 \
    --num_generations 16 \
    --temperature 1.0 \
    --deepspeed zero3_offload \
    --log_completions true \
    --sleep_level 1 \
    --report_to tensorboard swanlab \
    --num_iterations 1 \
    --beta 0.001 \
    --move_model_batches 10 \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here"),
    Example('examples/train/grpo/internal/moe_lora.sh',
            r'''# 8*80G

CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --reward_funcs accuracy \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.4 \
    --vllm_tensor_parallel_size 2 \
    --vllm_max_model_len 16384 \
    --tuner_type lora \
    --torch_dtype bfloat16 \
    --dataset math.jsonl \
    --max_length 12000 \
    --max_completion_length 8192 \
    --overlong_filter true \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --learning_rate 1e-6 \
    --gradient_accumulation_steps 4 \
    --save_strategy 'steps' \
    --eval_strategy 'steps' \
    --eval_steps 1000 \
    --save_steps 1000 \
    --save_total_limit 10 \
    --logging_steps 1 \
    --warmup_ratio 0.01 \
    --dataloader_num_workers 4 \
    --num_generations 16 \
    --temperature 1.0 \
    --deepspeed zero3 \
    --log_completions true \
    --sleep_level 1 \
    --offload_model true \
    --offload_optimizer true \
    --report_to tensorboard swanlab \
    --num_iterations 1 \
    --beta 0.001 \
    --move_model_batches 10 \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here"),
    Example('examples/train/grpo/internal/qlora.sh',
            r'''SYSTEM_PROMPT="You are a helpful math assistant. Solve the problem step by step. Show your reasoning in <think> </think> tags, then give the final numerical answer after ####.
For example:
<think> ... reasoning ... </think>
#### 42"
CUDA_VISIBLE_DEVICES=0,1,2,3 \
NPROC_PER_NODE=4 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --external_plugins examples/train/grpo/plugin/gsm8k/gsm8k_plugin.py \
    --reward_funcs gsm8k_accuracy gsm8k_format \
    --columns '{"answer": "solution"}' \
    --enable_thinking false \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.4 \
    --vllm_tensor_parallel_size 1 \
    --vllm_max_model_len 10240 \
    --vllm_enable_lora true \
    --sleep_level 1 \
    --tuner_type lora \
    --quant_method bnb \
    --quant_bits 4 \
    --bnb_4bit_quant_type nf4 \
    --torch_dtype bfloat16 \
    --dataset gsm8k.jsonl \
    --load_from_cache_file true \
    --max_length 2048 \
    --max_completion_length 8192 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --learning_rate 1e-5 \
    --lr_scheduler_type cosine \
    --save_steps 10 \
    --save_total_limit 100 \
    --logging_steps 1 \
    --warmup_ratio 0.0 \
    --dataloader_num_workers 4 \
    --num_generations 8 \
    --temperature 1.0 \
    --system "$SYSTEM_PROMPT" \
    --deepspeed zero2 \
    --log_completions true \
    --report_to tensorboard swanlab \
    --max_grad_norm 1.0 \
    --epsilon 0.2 \
    --epsilon_high 0.28 \
    --scale_rewards none \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here (before it: ms-swift's GSM8K plugin rewards, "
                "--columns, --enable_thinking (the tiny model's template has no thinking switch: a run notes it), "
                "--vllm_enable_lora (noted), QLoRA's --quant_method bnb and --bnb_4bit_quant_type are taken)"),
    Example('examples/train/grpo/internal/real.sh',
            r'''CUDA_VISIBLE_DEVICES=2 \
rlhfx rollout \
    --model tiny


NPROC_PER_NODE=2 \
CUDA_VISIBLE_DEVICES=0,1 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --dataset math.jsonl  \
    --enable_thinking false \
    --reward_funcs accuracy \
    --use_vllm true \
    --vllm_mode server \
    --vllm_server_host 127.0.0.1 \
    --vllm_server_port 8000 \
    --tuner_type full \
    --torch_dtype bfloat16 \
    --load_from_cache_file true \
    --max_completion_length 4096 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 8 \
    --learning_rate 2e-6 \
    --gradient_accumulation_steps 1 \
    --save_total_limit 2 \
    --save_steps 500 \
    --logging_steps 1 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --num_generations 8 \
    --temperature 0.6 \
    --system """You are a helpful math assistant. Solve the problem step by step and put your final answer within \\boxed{}.""" \
    --log_completions true \
    --num_iterations 1 \
    --beta 0.001 \
    --loss_type real \
    --deepspeed zero2 \
    --max_steps 1
''',
            'needs vLLM, which cannot be imported here',
            why="its first line starts `rlhfx rollout` (vLLM: in .venv-vllm it serves until stopped, as in ms-swift's second terminal); its trainer command (--loss_type real, --deepspeed zero2) trains 1 step on the CPU without the server, --enable_thinking as written (test_swift_examples.py)"),
    Example('examples/train/grpo/internal/reinforce_plus_plus.sh',
            r'''# Reinforce++-Baseline in https://arxiv.org/abs/2501.03262

PYTORCH_CUDA_ALLOC_CONF='expandable_segments:True' \
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
MASTER_PORT=29900 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --advantage_estimator reinforce_plus_plus \
    --scale_rewards batch \
    --kl_in_reward true \
    --external_plugins examples/train/grpo/plugin/plugin.py \
    --dataset math.jsonl \
    --reward_funcs external_r1v_acc format \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.8 \
    --vllm_tensor_parallel_size 1 \
    --vllm_max_model_len 16384 \
    --tuner_type lora \
    --torch_dtype bfloat16 \
    --overlong_filter false \
    --importance_sampling_level sequence \
    --epsilon 3e-4 \
    --epsilon_high 4e-4 \
    --max_completion_length 1024 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 2 \
    --learning_rate 1e-6 \
    --gradient_accumulation_steps 4 \
    --eval_steps 1000 \
    --save_steps 1000 \
    --save_total_limit 10 \
    --sleep_level 1 \
    --offload_model true \
    --offload_optimizer true \
    --logging_steps 1 \
    --dataloader_num_workers 4 \
    --num_generations 16 \
    --temperature 1.0 \
    --system 'examples/train/grpo/prompt.txt' \
    --deepspeed zero1 \
    --log_completions true \
    --report_to tensorboard swanlab \
    --num_iterations 1 \
    --async_generate false \
    --beta 0.001 \
    --attn_impl flash_attention_2 \
    --max_steps 1
''',
            '--attn_impl flash_attention_2 needs a CUDA GPU',
            why='FlashAttention 2 needs a GPU'),
    Example('examples/train/grpo/internal/rloo.sh',
            r'''CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --advantage_estimator rloo \
    --kl_in_reward true \
    --model tiny \
    --external_plugins examples/train/grpo/plugin/plugin.py \
    --reward_funcs external_r1v_acc format \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.4 \
    --vllm_tensor_parallel_size 1 \
    --vllm_max_model_len 16384 \
    --tuner_type lora \
    --torch_dtype bfloat16 \
    --dataset math.jsonl \
    --overlong_filter false \
    --epsilon 3e-4 \
    --epsilon_high 4e-4 \
    --max_completion_length 1024 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 2 \
    --learning_rate 1e-6 \
    --gradient_accumulation_steps 4 \
    --eval_steps 1000 \
    --save_steps 1000 \
    --save_total_limit 10 \
    --sleep_level 1 \
    --offload_model true \
    --offload_optimizer true \
    --logging_steps 1 \
    --dataloader_num_workers 4 \
    --num_generations 16 \
    --temperature 1.0 \
    --system 'examples/train/grpo/prompt.txt' \
    --deepspeed zero2 \
    --log_completions true \
    --report_to tensorboard swanlab \
    --num_iterations 1 \
    --async_generate false \
    --beta 0.001 \
    --attn_impl flash_attention_2 \
    --padding_free true \
    --loss_type grpo \
    --max_steps 1
''',
            '--attn_impl flash_attention_2 needs a CUDA GPU',
            why="GPU only: FlashAttention 2 kernels (its --attn_impl flash_attention_2); its --padding_free true "
                "(ms-swift's name of --packing_samples) is taken: online RL runs its forwards on the real tokens"),
    Example('examples/train/grpo/internal/sapo.sh',
            r'''# SAPO https://arxiv.org/abs/2511.20347
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
MAX_PIXELS=602112 \
rlhfx rlhf \
    --rlhf_type grpo \
    --loss_type sapo \
    --tau_pos 1 \
    --tau_neg 1.05 \
    --model tiny \
    --external_plugins examples/train/grpo/plugin/plugin.py \
    --reward_funcs external_r1v_acc format \
    --learning_rate 1e-6 \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.6 \
    --vllm_tensor_parallel_size 1 \
    --vllm_max_model_len 8192 \
    --tuner_type full \
    --torch_dtype bfloat16 \
    --dataset math.jsonl \
    --overlong_filter false \
    --importance_sampling_level token \
    --max_length 4096 \
    --max_completion_length 4096 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --num_generations 8 \
    --steps_per_generation 32 \
    --save_steps 1000 \
    --sleep_level 1 \
    --offload_model true \
    --offload_optimizer true \
    --logging_steps 1 \
    --dataloader_num_workers 4 \
    --temperature 1.0 \
    --system 'examples/train/grpo/prompt.txt' \
    --deepspeed zero1 \
    --log_completions true \
    --report_to tensorboard swanlab \
    --beta 0.001 \
    --attn_impl flash_attention_2 \
    --max_steps 1
''',
            '--attn_impl flash_attention_2 needs a CUDA GPU',
            why='FlashAttention 2 needs a GPU (--loss_type sapo with --tau_pos/--tau_neg is taken)'),
    Example('examples/train/grpo/internal/transformers.sh',
            r'''# pip install math_verify # reward function
# pip install -U trl
# GPU memory: 80GiB
# You can set `--reward_model` to use a reward model to provide rewards.
# TransformersEngine to rollout

CUDA_VISIBLE_DEVICES=0 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --reward_funcs accuracy format \
    --tuner_type lora \
    --lora_rank 8 \
    --lora_alpha 32 \
    --target_modules all-linear \
    --torch_dtype bfloat16 \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --max_completion_length 1024 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --learning_rate 1e-5 \
    --gradient_accumulation_steps 1 \
    --eval_steps 100 \
    --save_steps 100 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --max_length 2048 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --dataset_num_proc 4 \
    --num_generations 4 \
    --temperature 0.9 \
    --system 'examples/train/grpo/prompt.txt' \
    --log_completions true \
    --max_steps 1
''',
            'runs',
            why='slow on the CPU (bfloat16 rollouts of up to 1024 tokens): the test is marked slow',
            slow=True),
    Example('examples/train/grpo/internal/vllm_72b_4gpu.sh',
            r'''# 4*80G GPU

CUDA_VISIBLE_DEVICES=0,1,2,3 \
NPROC_PER_NODE=4 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --tuner_type lora \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.55 \
    --vllm_max_model_len 2048 \
    --vllm_tensor_parallel_size 4 \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --torch_dtype bfloat16 \
    --num_train_epochs 1 \
    --max_length 2048 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --gradient_accumulation_steps 1 \
    --eval_steps 1000 \
    --save_steps 1000 \
    --learning_rate 1e-6 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --max_completion_length 1024 \
    --reward_funcs accuracy format \
    --num_generations 4 \
    --system examples/train/grpo/prompt.txt \
    --deepspeed zero3_offload \
    --temperature 1.0 \
    --top_p 1.0 \
    --top_k 80 \
    --log_completions true \
    --move_model_batches 16 \
    --offload_optimizer true \
    --offload_model true \
    --sleep_level 1 \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here"),
    Example('examples/train/grpo/internal/vllm_lora_qwenvl72b.sh',
            r'''# pip install math_verify # reward function
# GPU memory: 8 * 80GiB

MAX_PIXELS=602112 \
WANDB_API_KEY=xxx \
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
  --rlhf_type grpo \
  --model tiny \
  --tuner_type lora \
  --use_vllm true \
  --vllm_mode colocate \
  --vllm_gpu_memory_utilization 0.5 \
  --vllm_max_model_len 8192 \
  --vllm_tensor_parallel_size 4 \
  --dataset math.jsonl \
  --load_from_cache_file true \
  --external_plugins examples/train/grpo/plugin/plugin.py \
  --reward_funcs external_r1v_acc format \
  --reward_weights 1 0.1 \
  --torch_dtype bfloat16 \
  --attn_impl flash_attn \
  --num_train_epochs 1 \
  --max_length 8192 \
  --per_device_train_batch_size 1 \
  --per_device_eval_batch_size 1 \
  --gradient_accumulation_steps 1 \
  --eval_steps 500 \
  --save_steps 500 \
  --learning_rate 1e-6 \
  --save_total_limit 2 \
  --logging_steps 1 \
  --warmup_ratio 0.05 \
  --dataloader_num_workers 4 \
  --max_completion_length 2048 \
  --num_generations 8 \
  --deepspeed zero3 \
  --temperature 1.1 \
  --top_p 1.0 \
  --top_k 80 \
  --log_completions true \
  --offload_optimizer true \
  --offload_model true \
  --move_model_batches 40 \
  --sleep_level 1 \
  --report_to wandb \
  --system examples/train/grpo/prompt.txt \
    --max_steps 1
''',
            '--attn_impl flash_attn needs a CUDA GPU',
            why='FlashAttention needs a GPU (and vision-language models are not supported)'),
    Example('examples/train/grpo/internal/vllm_multi_turn.sh',
            r'''# It's recommended to use server mode for multi-turn training
# Colocate multi-turn does not support rollouts with dynamic rollout outputs

CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --tuner_type full \
    --reward_funcs accuracy \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --torch_dtype bfloat16 \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.5 \
    --vllm_max_model_len 2048 \
    --vllm_tensor_parallel_size 4 \
    --num_train_epochs 1 \
    --max_length 2048 \
    --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --eval_steps 1000 \
    --save_steps 1000 \
    --learning_rate 1e-6 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --output_dir output \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --max_completion_length 2048 \
    --num_generations 32 \
    --deepspeed zero3 \
    --temperature 1.0 \
    --top_p 1.0 \
    --top_k 80 \
    --log_completions true \
    --offload_optimizer true \
    --offload_model true \
    --sleep_level 1 \
    --multi_turn_scheduler math_tip_trick \
    --max_turns 3 \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here (the multi-turn flags are taken: "
                "--multi_turn_scheduler math_tip_trick --max_turns 3)"),
    Example('examples/train/grpo/internal/vllm_vl7b.sh',
            r'''MAX_PIXELS=1003520 \
NPROC_PER_NODE=8 \
rlhfx rlhf \
    --rlhf_type grpo \
    --model tiny \
    --tuner_type lora \
    --dataset math.jsonl \
    --load_from_cache_file true \
    --use_vllm true \
    --vllm_mode colocate \
    --vllm_gpu_memory_utilization 0.5 \
    --vllm_tensor_parallel_size 4 \
    --torch_dtype bfloat16 \
    --system examples/train/grpo/prompt.txt \
    --num_train_epochs 1 \
    --per_device_train_batch_size 1 \
    --per_device_eval_batch_size 1 \
    --learning_rate 1e-6 \
    --save_total_limit 2 \
    --logging_steps 5 \
    --output_dir output \
    --gradient_accumulation_steps 1 \
    --warmup_ratio 0.05 \
    --dataloader_num_workers 4 \
    --max_completion_length 1024 \
    --reward_funcs accuracy format \
    --num_generations 8 \
    --sleep_level 1 \
    --temperature 1.0 \
    --top_p 0.85 \
    --max_steps 1
''',
            '--sleep_level needs a GPU',
            why="vLLM's sleep mode frees GPU memory; there is no GPU here (vision-language models are not supported either)"),
]
