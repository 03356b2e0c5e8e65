"""Launches and memory flags that cannot work fail at once with a clear error (exit 2), before any training."""

import os

import pytest
from cli_inprocess import run_cli  # noqa: F401

from rlhfx.training.scale import PRESETS, deepspeed_config

DPO = ["rlhf", "--rlhf_type", "dpo", "--model", "tiny", "--dataset", "demo-pref#8", "--max_steps", "1"]


def test_every_preset_is_shipped_with_auto_batch_fields():
    assert PRESETS == ("zero0", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")
    for name in PRESETS:
        config = deepspeed_config(name)
        assert config["train_micro_batch_size_per_gpu"] == "auto" and config["gradient_accumulation_steps"] == "auto"
        assert config["zero_optimization"]["stage"] == int(name[4])
        assert ("offload_optimizer" in config["zero_optimization"]) == name.endswith("offload")


@pytest.mark.parametrize("argv, what, fix", [
    (["--deepspeed", "zero_2"], "Unknown --deepspeed preset 'zero_2'", "did you mean zero2?"),
    (["--deepspeed", "missing.json"], "DeepSpeed config missing.json does not exist", "zero3_offload"),
    (["--deepspeed", "zero2_offload"], "offloads GPU memory to the CPU, but no CUDA GPU is visible", "use --deepspeed zero2"),
    (["--deepspeed", "zero3", "--device_map", "auto"], "cannot run under --deepspeed zero3: ZeRO-3 places", "drop --device_map"),
    (["--flash_attn"], "--flash_attn needs a CUDA GPU", "drop --flash_attn"),
    (["--load_in_4bit", "--train_type", "lora"], "--quant_bits 4 (QLoRA) uses bitsandbytes CUDA kernels", "GPU machine"),
    (["--quant_bits", "4", "--train_type", "full"], "only adapters can train", "--train_type lora"),
    (["--quant_method", "bnb", "--train_type", "lora"], "--quant_method bnb quantises with --quant_bits 4 or 8",
     "add --quant_bits 4"),
    (["--ref_offload", "--train_type", "full"], "no CUDA GPU is visible", "drop --ref_offload"),
    (["--aux_loss_coef", "0.01"], "is not a Mixture-of-Experts model", "drop --aux_loss_coef"),
])
def test_impossible_launches_fail_clearly(run_cli, tmp_path, argv, what, fix):  # noqa: F811
    code, output = run_cli(*DPO, "--output_dir", tmp_path / "out", *argv)
    assert code == 2, output
    assert what in output and fix in output and "Traceback" not in output
    assert not (tmp_path / "out" / "summary.json").exists()
    assert "LOCAL_RANK" not in os.environ  # a refused launch leaves no rendezvous behind for later processes


def test_packing_is_refused_for_an_algorithm_that_cannot_pack(run_cli):  # noqa: F811
    code, output = run_cli("rlhf", "--rlhf_type", "kto", "--model", "tiny", "--dataset", "demo-kto", "--packing_samples")
    assert code == 2 and "--packing_samples does not apply to --rlhf_type kto; it is used by dpo" in output


def test_deepspeed_with_several_gpus_and_one_process_is_refused(monkeypatch):
    import torch

    from rlhfx.errors import RlhfxError
    from rlhfx.training.scale import check_launch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = type("Args", (), {"deepspeed": "zero2", "device_map": None})()
    with pytest.raises(RlhfxError) as error:
        check_launch(args, deepspeed_config("zero2"))
    assert "4 GPUs visible but one process" in error.value.what and "NPROC_PER_NODE=4" in error.value.fix


@pytest.mark.parametrize("gpus, processes, refused", [(1, 2, True), (2, 2, False), (0, 2, False)])
def test_more_processes_per_node_than_gpus_is_refused_before_launch(monkeypatch, gpus, processes, refused):
    import torch

    from rlhfx.errors import RlhfxError
    from rlhfx.launch import check_gpus_per_node

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if not refused:  # no GPU: the processes run on the CPU (gloo); enough GPUs: one each
        check_gpus_per_node(processes)
        return
    with pytest.raises(RlhfxError) as error:
        check_gpus_per_node(processes)
    assert "NPROC_PER_NODE=2 but 1 GPU visible" in error.value.what and "NPROC_PER_NODE=1" in error.value.fix


@pytest.mark.parametrize("argv, preset", [
    (["--zero_stage", "2"], "zero2"),
    (["--zero_stage", "3", "--adam_offload"], "zero3_offload"),
    (["--deepspeed", "zero2", "--adam_offload"], "zero2_offload"),
    ([], None),
])
def test_openrlhf_zero_flags_choose_the_deepspeed_preset(argv, preset):
    from rlhfx.arguments import parse_args
    from rlhfx.training.scale import apply_openrlhf_zero_flags

    args = parse_args("rlhf", ["--rlhf_type", "dpo", "--model", "tiny", *argv])
    apply_openrlhf_zero_flags(args)
    assert args.deepspeed == preset


@pytest.mark.parametrize("argv, what", [
    (["--zero_stage", "2", "--deepspeed", "zero3"], "--zero_stage 2 and --deepspeed zero3 both choose"),
    (["--adam_offload"], "--adam_offload needs ZeRO stage 2 or 3"),
    (["--zero_stage", "1", "--adam_offload"], "--adam_offload needs ZeRO stage 2 or 3"),
])
def test_openrlhf_zero_flags_that_disagree_fail_clearly(run_cli, tmp_path, argv, what):  # noqa: F811
    code, output = run_cli(*DPO, "--output_dir", tmp_path / "out", *argv)
    assert code == 2 and what in output and "Traceback" not in output


@pytest.mark.parametrize("bf16, refused", [(False, True), (None, False)])
def test_flash_attention_over_float32_weights_needs_bf16_autocast(monkeypatch, bf16, refused):
    """On a GPU with flash_attn installed (both simulated): float32 master weights are fine under --bf16, whose
    autocast feeds the kernel bf16; with --bf16 false the kernel would get float32 and fail at the first step."""
    import sys
    from types import ModuleType, SimpleNamespace

    import torch

    from rlhfx.errors import RlhfxError
    from rlhfx.models import model_load_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setitem(sys.modules, "flash_attn", ModuleType("flash_attn"))
    args = SimpleNamespace(flash_attn=True, bf16=bf16, load_in_4bit=False, quant_bits=None, quant_method=None,
                           device_map=None)
    if refused:
        with pytest.raises(RlhfxError) as error:
            model_load_kwargs(args, torch.float32)
        assert "--flash_attn computes in bf16 or fp16" in error.value.what and "--bf16" in error.value.fix
    else:
        assert model_load_kwargs(args, torch.float32)["attn_implementation"] == "flash_attention_2"


def test_ms_swift_s_bnb_flags_reach_the_quantisation_config(monkeypatch):
    """qlora.sh's --quant_method bnb --quant_bits 4 --bnb_4bit_quant_type: bitsandbytes' 4-bit config of that type
    (a GPU and bitsandbytes simulated)."""
    import sys
    from types import ModuleType

    import torch

    from rlhfx.arguments import parse_args
    from rlhfx.models import model_load_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", ModuleType("bitsandbytes"))
    for kind in ("fp4", "nf4"):
        args = parse_args("sft", ["--quant_method", "bnb", "--quant_bits", "4", "--bnb_4bit_quant_type", kind])
        config = model_load_kwargs(args, torch.bfloat16)["quantization_config"]
        assert config.load_in_4bit and config.bnb_4bit_quant_type == kind


@pytest.mark.parametrize("argv, what", [
    (["pipeline", "rs", "--model", "tiny", "--dataset", "demo-prompts#8", "--reward_func", "demo"],
     "rlhfx pipeline runs its stages in one process; NPROC_PER_NODE/NNODES would be ignored"),
])
def test_launches_that_one_process_runs_refuse_nproc_per_node(run_cli, monkeypatch, tmp_path, argv, what):  # noqa: F811
    monkeypatch.setenv("NPROC_PER_NODE", "2")  # refused before torchrun would start ranks that each load and fail
    code, output = run_cli(*argv, "--output_dir", tmp_path / "out")
    assert code == 2 and what in output and "launching" not in output and not (tmp_path / "out").exists()


GRPO = ["rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-math#8", "--reward_funcs", "accuracy"]


@pytest.mark.parametrize("argv, what", [
    ([*GRPO, "--use_vllm", "true", "--sleep_level", "1"], "--sleep_level needs a GPU"),
    ([*DPO, "--attn_impl", "flash_attn"], "--attn_impl flash_attn needs a CUDA GPU"),
    ([*DPO, "--beta", "-1"], "--beta is -1.0"),
])
def test_nproc_per_node_checks_flags_once_before_ranks(run_cli, monkeypatch, tmp_path, argv, what):  # noqa: F811
    """`NPROC_PER_NODE=4 rlhfx ...` with a flag each rank would refuse: the launcher runs the same checks first and
    prints their error once; no rank is started."""
    monkeypatch.setenv("NPROC_PER_NODE", "4")
    code, output = run_cli(*argv, "--output_dir", tmp_path / "out")
    assert code == 2 and output.count(what) == 1 and "launching" not in output, output
