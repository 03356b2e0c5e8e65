"""Model and adapter folders that are half-written, damaged, unfinished or whose base moved: clear errors."""

import json
import shutil
from pathlib import Path

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny model and an (untrained) LoRA adapter on it, saved as an rlhfx run records it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhfx.registry.tiny import tiny_model_path

    root = tmp_path_factory.mktemp("folders")
    base, adapter = root / "base", root / "adapter"
    shutil.copytree(tiny_model_path(), base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules="all-linear"))
    model.save_pretrained(adapter)
    (adapter / "args.json").write_text(json.dumps({"rlhf_type": "sft", "model_path": str(base), "model_type": "tiny"}))
    (adapter / "summary.json").write_text("{}")
    return base, adapter


def cut_in_half(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])


def test_half_written_model_weights(run_cli, base_and_adapter, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(base_and_adapter[0], broken)
    cut_in_half(broken / "model.safetensors")
    (tmp_path / "prompts.txt").write_text("Hi\n")
    code, text = run_cli("infer", "--model", broken, "--input_file", tmp_path / "prompts.txt",
                         "--output_file", tmp_path / "out.jsonl")
    assert code == 2 and "Traceback" not in text, text
    assert f"The weights of model '{broken}' are damaged" in text and "cut short" in text
    assert not (tmp_path / "out.jsonl").exists()


def test_half_written_adapter_weights(run_cli, base_and_adapter, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(base_and_adapter[1], adapter)
    cut_in_half(adapter / "adapter_model.safetensors")
    code, text = run_cli("export", "--adapters", adapter, "--merge_lora", "--output_dir", tmp_path / "out")
    assert code == 2 and "Traceback" not in text, text
    assert f"The adapter weights in {adapter} are damaged" in text


def test_adapter_whose_base_moved(run_cli, base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    moved = base.with_name("moved")
    base.rename(moved)
    try:
        code, text = run_cli("export", "--adapters", adapter, "--merge_lora", "--output_dir", tmp_path / "out")
    finally:
        moved.rename(base)
    assert code == 2 and "Traceback" not in text, text
    assert f"The base model of adapter {adapter} is missing: {base}" in text and "--model" in text
    assert "network" not in text


def test_a_run_records_its_local_base_as_an_absolute_path(run_cli, tmp_path, monkeypatch):
    """So an adapter is found from any folder, and a moved base is named (not taken for a hub id)."""
    from rlhfx.registry.tiny import tiny_model_path

    shutil.copytree(tiny_model_path(), tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    code, text = run_cli("sft", "--model", "base", "--dataset", "demo-sft#4", "--max_steps", "1", "--output_dir", "run")
    assert code == 0, text
    assert json.loads((tmp_path / "run" / "args.json").read_text())["model_path"] == str(tmp_path / "base")
