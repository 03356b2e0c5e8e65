"""Model-type detection and LoRA target resolution."""

import pytest

from rlhfx.errors import RlhfxError
from rlhfx.registry.models import MODEL_TYPES, lora_target_modules, resolve_model_type
from rlhfx.templates.templates import TEMPLATES


def test_every_model_type_names_a_template():
    assert all(m.template in TEMPLATES for m in MODEL_TYPES.values())


@pytest.mark.parametrize(
    "model, expected",
    [
        ("tiny", "tiny"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama2"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama3.1"),
        ("meta-llama/Llama-3.2-1B-Instruct", "llama3.2"),
        ("Qwen/Qwen2-7B-Instruct", "qwen2"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5"),
        ("/models/qwen2_5-7b-instruct/", "qwen2.5"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "mistral"),
        ("google/gemma-2b-it", "gemma"),
        ("google/gemma-2-2b-it", "gemma2"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi3"),
        ("microsoft/Phi-3.5-mini-instruct", "phi3"),
        ("deepseek-ai/deepseek-llm-7b-chat", "deepseek"),
        ("01-ai/Yi-1.5-9B-Chat", "yi"),
        ("huggyllama/llama-30b", "default"),
        ("./my-model", "default"),
    ],
)
def test_detect_from_model_name(model, expected):
    assert resolve_model_type(model, None, None).name == expected


@pytest.mark.parametrize(
    "architectures, expected",
    [
        (["Qwen2ForCausalLM"], "qwen2"),
        (["MistralForCausalLM"], "mistral"),
        (["GemmaForCausalLM"], "gemma"),
        (["Gemma2ForCausalLM"], "gemma2"),
        (["Phi3ForCausalLM"], "phi3"),
        (["LlamaForCausalLM"], "default"),
        (["GPT2LMHeadModel"], "default"),
        (None, "default"),
    ],
)
def test_detect_from_architectures(architectures, expected):
    assert resolve_model_type("/ckpt/checkpoint-500", None, architectures).name == expected


@pytest.mark.parametrize(
    "model_type, expected",
    [
        ("llama3", "llama3"),
        ("llama3-8b-instruct", "llama3"),
        ("llama3.1-8b", "llama3.1"),
        ("llama3_1-8b-instruct", "llama3.1"),
        ("qwen2-7b-instruct", "qwen2"),
        ("qwen2_5-7b", "qwen2.5"),
        ("Qwen2.5", "qwen2.5"),
        ("yi-34b-chat", "yi"),
    ],
)
def test_explicit_model_type_wins(model_type, expected):
    assert resolve_model_type("Qwen/Qwen2-7B-Instruct", model_type, ["Phi3ForCausalLM"]).name == expected


def test_unknown_model_type_suggests_a_name():
    with pytest.raises(RlhfxError, match="Did you mean 'llama3'") as error:
        resolve_model_type(None, "lama3-8b", None)
    assert "--model_type" in str(error.value)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


def test_lora_all_linear_layers(tiny_llama):
    targets = lora_target_modules(tiny_llama, "ALL", MODEL_TYPES["tiny"])
    assert targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_lora_default_targets(tiny_llama):
    assert lora_target_modules(tiny_llama, "DEFAULT", MODEL_TYPES["tiny"]) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # a model type without known targets falls back to every Linear layer
    assert "down_proj" in lora_target_modules(tiny_llama, ["DEFAULT"], MODEL_TYPES["default"])


def test_lora_explicit_targets(tiny_llama):
    assert lora_target_modules(tiny_llama, "q_proj, v_proj", MODEL_TYPES["tiny"]) == ["q_proj", "v_proj"]
    assert lora_target_modules(tiny_llama, ["up_proj"], MODEL_TYPES["tiny"]) == ["up_proj"]


def test_lora_missing_targets(tiny_llama):
    with pytest.raises(RlhfxError, match="qkv_proj") as error:
        lora_target_modules(tiny_llama, "qkv_proj,o_proj", MODEL_TYPES["tiny"])
    assert "q_proj" in error.value.fix and "lm_head" not in error.value.fix
    with pytest.raises(RlhfxError, match="qkv_proj"):
        lora_target_modules(tiny_llama, "DEFAULT", MODEL_TYPES["phi3"])
