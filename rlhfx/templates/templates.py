"""Chat templates as data, and `render`, which turns a conversation into text segments marked trainable or not.

Each template reproduces the string that the model's official Hugging Face chat template
(`chat_template` in its tokenizer_config.json) renders; the comment above each entry names it.
Rendering to segments instead of one string lets the encoder build loss masks that line up
exactly with the assistant answers and the end-of-turn tokens the model must learn to emit.
"""

import difflib
import time
from dataclasses import dataclass
from typing import NamedTuple

from rlhfx.errors import RlhfxError


class Segment(NamedTuple):
    text: str
    trainable: bool


@dataclass(frozen=True)
class Template:
    """How one chat format writes each turn. Format strings take `{content}`; `assistant` may also
    take `{eos}` (the tokenizer's eos token, given to `render`)."""

    name: str
    user: str
    assistant_header: str  # before each answer; also the generation prompt
    assistant: str  # the answer and its end-of-turn token(s): the trainable part
    assistant_footer: str = ""  # after the end-of-turn token, not trained on
    system: str | None = None  # None: the format has no system turn, so it is merged into the first user turn
    system_in_user: str = "{system}\n\n{content}"
    default_system: str | None = None  # used when the conversation has none ("" still renders a system turn)
    bos: str = ""  # once, at the very start
    closing: str = ""  # once, after the last message, when no generation prompt is added
    strip: bool = False  # the official template trims every message's content


_CHATML = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_header="<|im_start|>assistant\n",
    assistant="{content}<|im_end|>",
    assistant_footer="\n",
)
_LLAMA3 = dict(
    bos="<|begin_of_text|>",
    system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
    user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
    assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
    assistant="{content}<|eot_id|>",
    strip=True,
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        # ChatML as in teknium/OpenHermes-2.5-Mistral-7B and 01-ai/Yi-*-Chat: no default system prompt.
        Template(name="chatml", **_CHATML),
        # Qwen/Qwen2-*-Instruct: ChatML with a default system prompt.
        Template(name="qwen2", default_system="You are a helpful assistant.", **_CHATML),
        # Qwen/Qwen2.5-*-Instruct (without tools): ChatML with Qwen2.5's default system prompt.
        Template(
            name="qwen2.5",
            default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            **_CHATML,
        ),
        # meta-llama/Llama-2-*-chat-hf: bos before every [INST]; answers are " answer </s>".
        Template(
            name="llama2",
            system_in_user="<<SYS>>\n{system}\n<</SYS>>\n\n{content}",
            user="<s>[INST] {content} [/INST]",
            assistant_header="",
            assistant=" {content} </s>",
            strip=True,
        ),
        # meta-llama/Meta-Llama-3-*-Instruct.
        Template(name="llama3", **_LLAMA3),
        # meta-llama/Llama-3.1-*-Instruct without tools: a system turn always, dated with the template's
        # default date_string.
        Template(
            name="llama3.1",
            **{
                **_LLAMA3,
                "system": "<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{content}<|eot_id|>",
            },
            default_system="",
        ),
        # meta-llama/Llama-3.2-*-Instruct without tools: Llama 3.1's format dated today, as its template does
        # under transformers (strftime_now), so training sees what inference with apply_chat_template sends.
        Template(
            name="llama3.2",
            **{
                **_LLAMA3,
                "system": "<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: {today}\n\n{content}<|eot_id|>",
            },
            default_system="",
        ),
        # mistralai/Mistral-7B-Instruct-v0.1/v0.2, their updated template that accepts a system prompt
        # (prepended to the first user message). v0.3's template differs ("[INST]"/"[/INST]" without the
        # surrounding spaces, system prompt before the last user message).
        Template(
            name="mistral",
            bos="<s>",
            user=" [INST] {content} [/INST]",
            assistant_header="",
            assistant=" {content}</s>",
        ),
        # google/gemma-*-it and gemma-2-*-it. Their templates reject a system message; we merge it into the
        # first user turn as Gemma 3's official template does.
        Template(
            name="gemma",
            bos="<bos>",
            user="<start_of_turn>user\n{content}<end_of_turn>\n",
            assistant_header="<start_of_turn>model\n",
            assistant="{content}<end_of_turn>",
            assistant_footer="\n",
            strip=True,
        ),
        # microsoft/Phi-3-mini-4k-instruct and Phi-3.5-mini-instruct: the eos token closes a conversation
        # rendered without a generation prompt.
        Template(
            name="phi3",
            system="<|system|>\n{content}<|end|>\n",
            user="<|user|>\n{content}<|end|>\n",
            assistant_header="<|assistant|>\n",
            assistant="{content}<|end|>",
            assistant_footer="\n",
            closing="<|endoftext|>",
        ),
        # deepseek-ai/deepseek-llm-*-chat: the generation prompt is "Assistant:" while a written answer
        # follows "Assistant: ", so the space belongs to the answer.
        Template(
            name="deepseek",
            bos="<｜begin▁of▁sentence｜>",
            system="{content}\n\n",
            user="User: {content}\n\n",
            assistant_header="Assistant:",
            assistant=" {content}<｜end▁of▁sentence｜>",
        ),
        # Base models without a chat format: plain role labels, answers end with the tokenizer's eos.
        Template(
            name="default",
            system="System: {content}\n",
            user="User: {content}\n",
            assistant_header="Assistant:",
            assistant=" {content}{eos}",
            assistant_footer="\n",
        ),
    )
}


def get_template(name: str) -> Template:
    if name in TEMPLATES:
        return TEMPLATES[name]
    close = difflib.get_close_matches(name, TEMPLATES, n=1)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    raise RlhfxError(f"Unknown chat template '{name}'.", f"{hint}Known templates: {', '.join(TEMPLATES)}.")


def split_conversation(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """Check the roles (optional leading system, then user/assistant alternating from user) and
    return (system prompt or None, the remaining turns)."""
    if not isinstance(messages, list) or not messages:
        raise RlhfxError(
            "A conversation must be a non-empty list of messages.", 'Give e.g. [{"role": "user", "content": "Hi"}].'
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RlhfxError(
                f"Message {i} of the conversation has no text 'content': {message!r}.",
                'Write each message as {"role": ..., "content": "text"}.',
            )
    system = messages[0]["content"] if messages[0].get("role") == "system" else None
    turns = messages[1:] if system is not None else messages
    roles = [m.get("role") for m in messages]
    if not turns or any(m.get("role") != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(turns)):
        raise RlhfxError(
            f"Bad role order in conversation: {roles}.",
            "Use an optional leading 'system' message, then 'user' and 'assistant' alternating, starting with 'user'.",
        )
    return system, turns


def render(
    template: Template, messages: list[dict], add_generation_prompt: bool = False, eos_token: str | None = None
) -> list[Segment]:
    """Render a conversation as segments whose texts concatenate to the official string.

    Adjacent segments with the same flag are merged, so every assistant answer is exactly one
    trainable segment (that is what makes prompt and completion tokenization line up)."""
    system, turns = split_conversation(messages)
    if add_generation_prompt and turns[-1]["role"] != "user":
        raise RlhfxError(
            "A generation prompt needs a conversation that ends with a user message.",
            "Drop the final assistant message.",
        )
    if "{eos}" in template.assistant and eos_token is None and any(m["role"] == "assistant" for m in turns):
        raise RlhfxError(
            f"Chat template '{template.name}' ends answers with the tokenizer's eos token, but none was given.",
            "Use a tokenizer that defines eos_token.",
        )

    def clean(text: str) -> str:
        return text.strip() if template.strip else text

    if system is None:
        system = template.default_system
    segments = [Segment(template.bos, False)]
    if system is not None and template.system is not None:
        today = time.strftime("%d %b %Y")  # the date Llama 3.2's template writes in (as transformers' strftime_now)
        segments.append(Segment(template.system.format(content=clean(system), today=today), False))
    for i, message in enumerate(turns):
        content = clean(message["content"])
        if message["role"] == "user":
            if i == 0 and system is not None and template.system is None:
                content = template.system_in_user.format(system=clean(system), content=content)
            segments.append(Segment(template.user.format(content=content), False))
        else:
            segments.append(Segment(template.assistant_header, False))
            segments.append(Segment(template.assistant.format(content=content, eos=eos_token), True))
            segments.append(Segment(template.assistant_footer, False))
    segments.append(Segment(template.assistant_header if add_generation_prompt else template.closing, False))
    return _merge(segments)


def _merge(segments: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if merged and merged[-1].trainable == segment.trainable:
            merged[-1] = Segment(merged[-1].text + segment.text, segment.trainable)
        else:
            merged.append(segment)
    return merged
