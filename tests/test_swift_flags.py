"""ms-swift's flag names map onto the rlhfx settings that do the same (rlhfx.training.swift_flags and the flag table)."""

import json

import pytest

from rlhfx.arguments import parse_args
from rlhfx.data.loader import DataConfig, load_data
from rlhfx.errors import RlhfxError
from rlhfx.training.hf_args import hf_training_kwargs
from rlhfx.training.swift_flags import apply_swift_flags


def parsed(command, *argv):
    args = parse_args(command, list(argv))
    notes = apply_swift_flags(args)
    return args, notes


def test_tuner_type_is_train_type_and_the_old_names_stay():
    for name in ("--tuner_type", "--train_type", "--sft_type"):
        assert parsed("sft", name, "full")[0].train_type == "full"


def test_rl_length_and_generation_names():
    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--response_length", "77", "--num_generations", "8",
                     "--num_iterations", "2", "--reward_funcs", "accuracy", "format")
    assert (args.generate_max_len, args.n_samples_per_prompt, args.num_ppo_epochs) == (77, 8, 2)
    assert args.reward_func == ["accuracy", "format"]


def test_use_vllm_colocate_is_the_vllm_engine():
    assert parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "true", "--vllm_mode", "colocate")[0].engine == "vllm"
    assert parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "true")[0].engine == "vllm"
    assert parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "false")[0].engine == "pt"
    server, _ = parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "true", "--vllm_mode", "server")
    assert (server.engine, server.vllm_mode) == ("vllm", "server")
    assert parsed("rlhf", "--rlhf_type", "grpo", "--engine", "vllm", "--vllm_mode", "server")[0].vllm_mode == "server"


@pytest.mark.parametrize("argv, words", [
    (["--vllm_mode", "colocate"], "without --use_vllm true"),
    (["--use_vllm", "true", "--engine", "pt"], "disagree"),
    (["--beta", "0.1", "--kl_coef", "0.2"], "both set the KL coefficient"),
])
def test_contradictions_are_clear_errors(argv, words):
    with pytest.raises(RlhfxError, match=words):
        parsed("rlhf", "--rlhf_type", "grpo", *argv)


def test_grpo_beta_is_the_kl_coefficient():
    from rlhfx.algos.rl import resolve_config

    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--beta", "0.001")
    assert resolve_config(args, "grpo").kl_coef == 0.001
    dpo, _ = parsed("rlhf", "--rlhf_type", "dpo", "--beta", "0.3")
    assert dpo.beta == 0.3 and "kl_coef" not in dpo.explicit


def test_attn_impl_picks_the_kernels():
    from rlhfx.models import model_load_kwargs

    assert parsed("sft", "--attn_impl", "flash_attn")[0].flash_attn is True
    assert parsed("sft", "--attn_impl", "flash_attention_2")[0].flash_attn is True
    eager, _ = parsed("sft", "--attn_impl", "eager")
    assert model_load_kwargs(eager, None)["attn_implementation"] == "eager"
    assert "attn_implementation" not in model_load_kwargs(parsed("sft")[0], None)


def test_system_txt_file_is_read(tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Think first.\nThen answer.")
    assert parsed("sft", "--system", str(prompt))[0].system == "Think first.\nThen answer."
    assert parsed("sft", "--system", "You are a helpful assistant.")[0].system == "You are a helpful assistant."


def test_trainer_flags_reach_training_arguments(tmp_path):
    args, _ = parsed("sft", "--dataloader_num_workers", "3", "--save_only_model", "true")
    kwargs = hf_training_kwargs(args, tmp_path, 1e-4, False)
    assert (kwargs["dataloader_num_workers"], kwargs["save_only_model"]) == (3, True)
    default = hf_training_kwargs(parsed("sft")[0], tmp_path, 1e-4, False)
    assert (default["dataloader_num_workers"], default["save_only_model"]) == (0, False)


def test_load_from_cache_file_is_noted_not_ignored():
    _, notes = parsed("sft", "--load_from_cache_file", "true")
    assert notes and "no preprocessing cache" in notes[0]
    assert parsed("sft")[1] == []


def test_model_name_and_author_fill_self_cognition_rows(tmp_path):
    rows = [{"query": "你是谁?", "response": "我是{{NAME}}, 由{{AUTHOR}}训练。", "tag": "zh"},
            {"query": "Who are you?", "response": "I am {{NAME}}, trained by {{AUTHOR}}.", "tag": "en"}]
    data = tmp_path / "self.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    train, _, _ = load_data(DataConfig([str(data)], "sft", model_name=["小黄", "Xiao Huang"], model_author=["魔搭", "ModelScope"]))
    answers = [row["messages"][-1]["content"] for row in train]
    assert answers == ["我是小黄, 由魔搭训练。", "I am Xiao Huang, trained by ModelScope."]
    one, _, _ = load_data(DataConfig([str(data)], "sft", model_name=["swift-robot"]))
    assert [row["messages"][-1]["content"] for row in one] == ["我是swift-robot, 由{{AUTHOR}}训练。",
                                                                 "I am swift-robot, trained by {{AUTHOR}}."]


@pytest.mark.parametrize("flag, value", [("sleep_level", "1"), ("offload_model", "true"), ("offload_optimizer", "true")])
def test_gpu_memory_flags_need_a_gpu(flag, value):
    from rlhfx.algos.rl.config import check_vllm_flags

    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "true", f"--{flag}", value)
    with pytest.raises(RlhfxError, match=f"--{flag} needs a GPU"):
        check_vllm_flags(args)
    pt, _ = parsed("rlhf", "--rlhf_type", "grpo", f"--{flag}", value)
    with pytest.raises(RlhfxError, match="configures vLLM rollouts"):
        check_vllm_flags(pt)


def test_vllm_tensor_parallel_needs_that_many_gpus():
    from rlhfx.algos.rl.config import check_vllm_flags

    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--use_vllm", "true", "--vllm_tensor_parallel_size", "2")
    with pytest.raises(RlhfxError, match="--vllm_tensor_parallel_size 2 needs a GPU for each"):
        check_vllm_flags(args)


def test_all_linear_among_other_lora_targets():
    """ms-swift's base_to_chat/lora2.sh: `--target_modules all-linear embed_tokens lm_head`."""
    from transformers import AutoModelForCausalLM

    from rlhfx.registry.models import lora_target_modules, resolve_model_type
    from rlhfx.registry.tiny import tiny_model_path

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    model_type = resolve_model_type("tiny", None, None)
    linear = lora_target_modules(model, "all-linear", model_type)
    assert lora_target_modules(model, ["all-linear", "embed_tokens"], model_type) == linear + ["embed_tokens"]
    # the output head: a target where the loss runs its forward (online RL), refused where TRL reads its weight
    targets = ["all-linear", "embed_tokens", "lm_head"]
    assert lora_target_modules(model, targets, model_type, head_trains=True) == linear + ["embed_tokens", "lm_head"]
    with pytest.raises(RlhfxError, match="output head lm_head: TRL's SFT, DPO and KTO trainers") as error:
        lora_target_modules(model, targets, model_type)
    assert "drop lm_head" in error.value.fix and "grpo" in error.value.fix


def test_only_online_rl_trains_a_lora_adapter_on_the_output_head():
    """TRL 1.16's SFT, DPO and KTO trainers (kd and gkd are SFTTrainers) compute log-probabilities from lm_head.weight
    and raise for an adapter there; rlhfx's online RL loop runs the model's forward."""
    from rlhfx.algos import ALGOS

    assert {name for name, algo in ALGOS.items() if algo.lora_on_head} == {"ppo", "grpo", "rloo", "reinforce_pp"}


@pytest.mark.parametrize("swift_name, rlhfx_name", [("grpo", "group_norm"), ("rloo", "rloo"),
                                                    ("reinforce_plus_plus", "reinforce_baseline")])
def test_swift_advantage_estimator_names(swift_name, rlhfx_name):
    """ms-swift's grpo / rloo / reinforce_plus_plus (REINFORCE++-baseline: group mean off, one std over the batch)."""
    from rlhfx.algos.rl.config import resolve_config

    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--advantage_estimator", swift_name, "--kl_in_reward", "true")
    config = resolve_config(args, "grpo")
    assert (config.advantage_estimator, config.use_kl_loss) == (rlhfx_name, False)


def test_steps_per_generation_sizes_the_rollout():
    """gspo.sh: 2 completions per micro batch x 32 micro batches = 64 completions = 4 prompts x 16 generations per
    rollout, cut into optimizer batches of 2 x 8 = 16: 4 optimizer steps per rollout (32 / 8), as in TRL."""
    from rlhfx.algos.rl.config import resolve_config
    from rlhfx.training.hf_args import gradient_accumulation

    args, _ = parsed("rlhf", "--rlhf_type", "grpo", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                     "8", "--num_generations", "16", "--steps_per_generation", "32")
    config = resolve_config(args, "grpo")
    assert config.rollout_batch_size == 4
    assert config.rollout_batch_size * config.n_samples_per_prompt // (args.batch_size * gradient_accumulation(args)) == 4
    default_n, _ = parsed("rlhf", "--rlhf_type", "grpo", "--batch_size", "4", "--steps_per_generation", "3")
    assert resolve_config(default_n, "grpo").rollout_batch_size == 3  # 12 completions / grpo's 4 per prompt


@pytest.mark.parametrize("argv, words", [
    (["--batch_size", "3", "--steps_per_generation", "1"], "not a multiple of --num_generations 4"),
    (["--batch_size", "4", "--steps_per_generation", "4", "--rollout_batch_size", "8"], "means --rollout_batch_size 4"),
])
def test_steps_per_generation_errors(argv, words):
    from rlhfx.algos.rl.config import resolve_config

    with pytest.raises(RlhfxError, match=words):
        resolve_config(parsed("rlhf", "--rlhf_type", "grpo", *argv)[0], "grpo")


def test_save_and_eval_strategies(tmp_path):
    def kwargs(*argv):
        return hf_training_kwargs(parsed("sft", "--eval_steps", "10", *argv)[0], tmp_path, 1e-4, True)

    assert (kwargs()["save_strategy"], kwargs()["eval_strategy"]) == ("steps", "steps")
    assert (kwargs("--save_strategy", "steps")["save_strategy"], kwargs("--eval_strategy", "steps")["eval_strategy"]) == (
        "steps", "steps")
    assert (kwargs("--save_strategy", "no")["save_strategy"], kwargs("--eval_strategy", "no")["eval_strategy"]) == (
        "no", "no")
    assert (kwargs("--save_strategy", "epoch")["save_strategy"], kwargs("--eval_strategy", "epoch")["eval_strategy"]) == (
        "epoch", "epoch")
    rl, _ = parsed("rlhf", "--rlhf_type", "grpo", "--save_strategy", "no", "--eval_strategy", "no", "--eval_steps", "5")
    assert (rl.save_steps, rl.eval_steps) == (-1, None)  # the online RL loop checkpoints only when save_steps > 0
    with pytest.raises(RlhfxError, match="counts rollouts, not epochs"):
        parsed("rlhf", "--rlhf_type", "grpo", "--save_strategy", "epoch")


def test_async_generate_only_false():
    assert parsed("rlhf", "--rlhf_type", "grpo", "--async_generate", "false")[0].async_generate is False
    with pytest.raises(RlhfxError, match="--async_generate true"):
        parsed("rlhf", "--rlhf_type", "grpo", "--async_generate", "true")
