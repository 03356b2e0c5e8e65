"""The chat templates model families publish in their tokenizer_config.json (template text and special tokens
only), for checking that rlhfx trains on exactly the tokens `tokenizer.apply_chat_template` gives.

Templates TRL ships verbatim (trl/chat_templates/*.jinja, kept in sync with the hub by TRL's CI) are read from
there; the others are copied here from the model repositories named beside them.
"""

from dataclasses import dataclass
from pathlib import Path


def _trl(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Family:
    chat_template: str
    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    system: bool = True  # the template accepts a system message


# teknium/OpenHermes-2.5-Mistral-7B
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen/Qwen2-7B-Instruct
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# HuggingFaceTB/SmolLM2-135M-Instruct: ChatML with its own default system prompt (not in rlhfx's registry)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# meta-llama/Llama-2-7b-chat-hf
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.2 (the updated template that takes a system message)
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}"
    "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}{%- endif %}{%- endfor %}"
)
# deepseek-ai/deepseek-llm-7b-chat
DEEPSEEK = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen/Qwen3-*: hybrid thinking; enable_thinking false writes an empty think block after the generation prompt
QWEN3 = _trl("qwen3")

_IM = ("<|im_start|>", "<|im_end|>")
_L3 = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# rlhfx template name -> its family's published template
FAMILIES = {
    "chatml": Family(CHATML, _IM, None, "<|im_end|>"),
    "qwen2": Family(QWEN2, (*_IM, "<|endoftext|>"), None, "<|im_end|>"),
    "qwen2.5": Family(_trl("qwen2_5"), (*_IM, "<|endoftext|>"), None, "<|im_end|>"),
    "llama2": Family(LLAMA2, ("<s>", "</s>"), "<s>", "</s>"),
    "llama3": Family(_trl("llama3"), _L3, "<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": Family(_trl("llama3_1"), _L3, "<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": Family(_trl("llama3_2"), _L3, "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": Family(MISTRAL, ("<s>", "</s>"), "<s>", "</s>"),
    "gemma": Family(_trl("gemma"), ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<eos>",
                    system=False),
    "phi3": Family(_trl("phi3"), ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), None,
                   "<|endoftext|>"),
    "deepseek": Family(DEEPSEEK, ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"), "<｜begin▁of▁sentence｜>",
                       "<｜end▁of▁sentence｜>"),
}
