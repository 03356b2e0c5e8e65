"""The embedded tiny model: deterministic build, Auto*-loadable, head_dim vLLM's CPU attention accepts."""

import hashlib

from rlhfx.registry.tiny import build_tiny_model, tiny_model_path


def digest(path):
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in ("tokenizer.json", "model.safetensors")}


def test_build_is_deterministic(tmp_path):
    build_tiny_model(tmp_path / "a")
    build_tiny_model(tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_loads_with_auto_classes_and_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    config = model.config
    assert config.hidden_size // config.num_attention_heads == 32 and config.head_dim == 32
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.eos_token == "<|im_end|>"
    assert "{% generation %}" in tokenizer.chat_template
    conversation = [{"role": "user", "content": "Tell me about the red fox."},
                    {"role": "assistant", "content": "The red fox is calm."}]
    out = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(trained) == "The red fox is calm.<|im_end|>"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 2_000_000
