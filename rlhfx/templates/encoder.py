"""Tokenize conversations with loss masks, prompts for generation and completions for preference data.

With a `Template`, each rendered segment is tokenized on its own (`add_special_tokens=False`; the
special tokens written in the template text are recognised by the tokenizer), so a mask is exact
at segment boundaries and a prompt's tokens are always a prefix of the full conversation's tokens.
With `template=None` the tokenizer's own `chat_template` is used; it must mark what the model
learns with `{% generation %}...{% endgeneration %}`.

A prompt whose first message carries `"raw": True` (the data layer's form of `--input_template`)
bypasses the chat template: the prompt text is used as is and each answer is followed by EOS.
"""

import re

from rlhfx.errors import RlhfxError
from rlhfx.templates.templates import Segment, Template, get_template, render, split_conversation

__all__ = ["ChatEncoder", "get_template"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatEncoder:
    def __init__(self, tokenizer, template: Template | None, train_on: str = "all"):
        if train_on not in ("all", "last"):
            raise RlhfxError(f"Unknown train_on value '{train_on}'.", "Use 'all' (every assistant turn) or 'last'.")
        if template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
            if not chat_template:
                raise RlhfxError(
                    "The tokenizer has no chat_template to render conversations with.",
                    "Pick a template by name (--template chatml, llama3, ...) or a --model_type.",
                )
            if not isinstance(chat_template, str) or not _GENERATION_TAG.search(chat_template):
                raise RlhfxError(
                    "The tokenizer's chat_template has no {% generation %} markers, so the assistant tokens "
                    "to train on cannot be found.",
                    "Pick a template by name (--template chatml, llama3, ...) or a --model_type.",
                )
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on

    def encode_sft(self, messages: list[dict]) -> dict[str, list[int]]:
        """Token ids of the conversation and a mask that is 1 on the tokens to train on."""
        if self.template is None and not _is_raw(messages):
            out = self._apply_chat_template(messages, return_assistant_tokens_mask=True)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            if self.train_on == "last":
                mask = _last_run(mask)
            return {"input_ids": ids, "assistant_masks": mask}
        segments = self._render(messages, add_generation_prompt=False)
        last = max((i for i, s in enumerate(segments) if s.trainable), default=-1)
        ids, mask = [], []
        for i, segment in enumerate(segments):
            tokens = self._tokenize(segment.text)
            trained = segment.trainable and (self.train_on == "all" or i == last)
            ids += tokens
            mask += [int(trained)] * len(tokens)
        return {"input_ids": ids, "assistant_masks": mask}

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """The conversation (ending with a user turn) followed by the generation prompt."""
        if self.template is None and not _is_raw(messages):
            _check_ends_with_user(messages)
            return list(self._apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
        segments = self._render(messages, add_generation_prompt=True)
        return [token for segment in segments for token in self._tokenize(segment.text)]

    def encode_completion(self, messages: list[dict], response: str) -> list[int]:
        """The tokens that follow `encode_prompt(messages)` when the assistant answers `response`:
        the answer and its end-of-turn token(s)."""
        _check_ends_with_user(messages)
        conversation = [*messages, {"role": "assistant", "content": response}]
        if self.template is None and not _is_raw(messages):
            out = self._apply_chat_template(conversation, return_assistant_tokens_mask=True)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            prompt = self.encode_prompt(messages)
            if ids[: len(prompt)] != prompt or 1 not in mask[len(prompt) :]:
                raise RlhfxError(
                    "The tokenizer's chat_template renders a prompt that is not the start of the same conversation "
                    "with its answer, so prompts and completions cannot be split.",
                    "Pick a template by name (--template chatml, llama3, ...) or a --model_type.",
                )
            end = len(mask) - mask[::-1].index(1)
            return ids[len(prompt) : end]
        segments = self._render(conversation, add_generation_prompt=False)
        answer = [s for s in segments if s.trainable][-1]
        return self._tokenize(answer.text)

    def prompt_text(self, messages: list[dict]) -> str:
        """The rendered prompt with the generation prompt, as text (for engines that tokenize themselves)."""
        if self.template is None and not _is_raw(messages):
            _check_ends_with_user(messages)
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        segments = self._render(messages, add_generation_prompt=True)
        return "".join(segment.text for segment in segments)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> list[Segment]:
        eos = self.tokenizer.eos_token
        if _is_raw(messages):
            return [Segment(messages[0]["content"], False)] + [
                Segment(m["content"] + (eos or ""), True) for m in messages[1:] if m["role"] == "assistant"]
        return render(self.template, messages, add_generation_prompt=add_generation_prompt, eos_token=eos)

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _apply_chat_template(self, messages: list[dict], **kwargs):
        split_conversation(messages)  # our clear error instead of the template's own exception
        return self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)


def _is_raw(messages: list[dict]) -> bool:
    return bool(messages) and bool(messages[0].get("raw"))


def _check_ends_with_user(messages: list[dict]) -> None:
    _, turns = split_conversation(messages)
    if turns[-1]["role"] != "user":
        raise RlhfxError("A prompt must end with a user message.", "Drop the final assistant message from the prompt.")


def _last_run(mask: list[int]) -> list[int]:
    """Keep only the last contiguous run of 1s (the last assistant turn)."""
    out = [0] * len(mask)
    i = len(mask) - 1
    while i >= 0 and mask[i] == 0:
        i -= 1
    while i >= 0 and mask[i] == 1:
        out[i] = 1
        i -= 1
    return out
