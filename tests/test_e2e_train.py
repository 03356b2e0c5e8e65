"""End to end through the `rlhfx` CLI on the embedded tiny model: files written, metrics moving the right way."""

import json

import pytest
from e2e import metrics, rlhfx, summary


def test_full_sft_learns_and_writes_a_loadable_model(sft_model):
    result = summary(sft_model)
    assert result["after"]["eval_loss"] < 0.5 * result["before"]["eval_loss"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "args.json", "metrics.jsonl", "curves.png",
                 "data_report.json"):
        assert (sft_model / name).exists(), name
    args = json.loads((sft_model / "args.json").read_text())
    assert args["model_type"] == "tiny" and args["template"] == "chatml"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(sft_model).config.architectures == ["LlamaForCausalLM"]
    assert AutoTokenizer.from_pretrained(sft_model).chat_template


def test_full_dpo_from_sft_reaches_high_heldout_accuracy(sft_model, tmp_path):
    out = tmp_path / "dpo"
    rlhfx("rlhf", "--rlhf_type", "dpo", "--model", str(sft_model), "--dataset", "demo-pref", "--train_type", "full",
          "--max_steps", "125", "--batch_size", "16", "--learning_rate", "5e-4", "--output_dir", str(out))
    result = summary(out)
    assert result["before"]["eval_rewards/accuracies"] == pytest.approx(0.5)
    assert result["after"]["eval_rewards/accuracies"] >= 0.9
    assert result["after"]["eval_rewards/margins"] > 0
    assert any("rewards/accuracies" in m for m in metrics(out))
    assert json.loads((out / "args.json").read_text())["model_type"] == "tiny"  # read back from the SFT run


def test_lora_dpo_with_rpo_and_ipo_variants(sft_model, tmp_path):
    from peft import PeftConfig

    for variant in (["--rpo_alpha", "0.5"], ["--ipo", "--beta", "0.5"], ["--label_smoothing", "0.1"]):
        out = tmp_path / variant[0].strip("-")
        rlhfx("rlhf", "--rlhf_type", "dpo", "--model", str(sft_model), "--dataset", "demo-pref#256",
              "--val_dataset", "demo-pref#64", "--train_type", "lora", "--lora_target_modules", "ALL",
              "--max_steps", "30", "--batch_size", "8", "--learning_rate", "5e-3", "--output_dir", str(out), *variant)
        result = summary(out)
        assert result["after"]["eval_rewards/accuracies"] > 0.7, variant
        config = PeftConfig.from_pretrained(out)
        assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").exists()


def test_lora_sft_adapter_loads_on_its_base(tmp_path):
    out = tmp_path / "lora"
    rlhfx("sft", "--model", "tiny", "--dataset", "demo-sft#200", "--train_type", "lora", "--lora_target_modules",
          "DEFAULT", "--max_steps", "20", "--batch_size", "8", "--learning_rate", "5e-3", "--output_dir", str(out))
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(out)
    assert sorted(model.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    losses = [m["loss"] for m in metrics(out) if "loss" in m]
    assert losses[-1] < losses[0]


def test_output_to_a_pipe_gets_a_plain_line_per_logging_step(tmp_path):
    """A cluster log (stdout a file or pipe, not a terminal): one plain line per --logging_steps with the loss."""
    import re

    out = tmp_path / "run"
    result = rlhfx("sft", "--model", "tiny", "--dataset", "demo-sft#16", "--max_steps", "4", "--logging_steps", "2",
                   "--batch_size", "2", "--output_dir", out)
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ") and "  loss " in line]
    logged = [(m["step"], m["loss"]) for m in metrics(out) if "loss" in m]  # steps 1 (first step), 2 and 4
    assert len(lines) == len(logged) >= 2, result.stdout
    for line, (step, loss) in zip(lines, logged):
        assert re.match(rf"step {step}/4  epoch [\d.]+  loss {loss:.4g}  ", line), line
