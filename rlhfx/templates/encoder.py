"""Tokenize conversations with loss masks, prompts for generation and completions for preference data.

A conversation is rendered to one text and tokenized once (as `apply_chat_template` does), and the
loss mask marks the tokens that start inside a trainable character span. The spans come from the
rendered segments of a `Template`, or, with `template=None`, from the tokenizer's own `chat_template`:
its `{% generation %}...{% endgeneration %}` markers where it has them, else by rendering the
conversation prefix by prefix (see `_prefix_spans`).

A prompt whose first message carries `"raw": True` (the data layer's form of `--input_template`)
bypasses the chat template: the prompt text is used as is and each answer is followed by EOS.
"""

import re

from rlhfx.errors import RlhfxError
from rlhfx.templates.templates import Segment, Template, get_template, render, split_conversation

__all__ = ["ChatEncoder", "get_template", "has_generation_markers"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_TEMPLATE_HINT = "Pick a template by name (--template chatml, llama3, ...) or a --model_type."


def has_generation_markers(chat_template) -> bool:
    return isinstance(chat_template, str) and bool(_GENERATION_TAG.search(chat_template))


class ChatEncoder:
    def __init__(self, tokenizer, template: Template | None, train_on: str = "all",
                 enable_thinking: bool | None = None):
        if train_on not in ("all", "last"):
            raise RlhfxError(f"Unknown train_on value '{train_on}'.", "Use 'all' (every assistant turn) or 'last'.")
        if template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
            if not chat_template or not isinstance(chat_template, str):
                raise RlhfxError("The tokenizer has no chat_template to render conversations with.", _TEMPLATE_HINT)
        self.tokenizer = tokenizer
        self.template = template
        self.train_on = train_on
        # extra variables of the tokenizer's chat_template (rlhfx.templates.choice passes enable_thinking only to one
        # that reads it)
        self._template_kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        self.markers = template is None and has_generation_markers(tokenizer.chat_template)
        self._closing = _end_tokens(tokenizer) if template is None and not self.markers else None

    def encode_sft(self, messages: list[dict]) -> dict[str, list[int]]:
        """Token ids of the conversation and a mask that is 1 on the tokens to train on."""
        ids, mask = self._encode_conversation(messages)
        return {"input_ids": ids, "assistant_masks": _last_run(mask) if self.train_on == "last" else mask}

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """The conversation (ending with a user turn) followed by the generation prompt."""
        return self._tokenize(self.prompt_text(messages))

    def encode_completion(self, messages: list[dict], response: str) -> list[int]:
        """The tokens that follow `encode_prompt(messages)` when the assistant answers `response`:
        the answer and its end-of-turn token(s)."""
        _check_ends_with_user(messages)
        conversation = [*messages, {"role": "assistant", "content": response}]
        if self.template is None and not _is_raw(messages):
            ids, mask = self._encode_conversation(conversation)
            prompt = self.encode_prompt(messages)
            if ids[: len(prompt)] != prompt or 1 not in mask[len(prompt):]:
                raise RlhfxError(
                    "The tokenizer's chat_template renders a prompt that is not the start of the same conversation "
                    "with its answer, so prompts and completions cannot be split.", _TEMPLATE_HINT)
            end = len(mask) - mask[::-1].index(1)
            return ids[len(prompt): end]
        segments = self._render(conversation, add_generation_prompt=False)
        answer = [s for s in segments if s.trainable][-1]
        return self._tokenize(answer.text)

    def prompt_text(self, messages: list[dict]) -> str:
        """The rendered prompt with the generation prompt, as text (for engines that tokenize themselves)."""
        if self.template is None and not _is_raw(messages):
            _check_ends_with_user(messages)
            return self._chat_template(messages, add_generation_prompt=True)
        return "".join(segment.text for segment in self._render(messages, add_generation_prompt=True))

    def _encode_conversation(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """(ids, mask) of a whole conversation, every assistant turn trainable."""
        if self.template is None and not _is_raw(messages) and self.markers:
            split_conversation(messages)  # our clear error instead of the template's own exception
            out = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                     return_assistant_tokens_mask=True, **self._template_kwargs)
            return list(out["input_ids"]), list(out["assistant_masks"])
        if self.template is None and not _is_raw(messages):
            text, spans = self._prefix_spans(messages)
        else:
            text, spans, at = "", [], 0
            for segment in self._render(messages, add_generation_prompt=False):
                if segment.trainable:
                    spans.append((at, at + len(segment.text)))
                text, at = text + segment.text, at + len(segment.text)
        return self._tokenize_with_spans(text, spans)

    def _prefix_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The tokenizer's render of the conversation and each assistant turn's character span.

        A turn starts where the render of the conversation before it, with the generation prompt, ends; it
        runs to the end of its answer and the end-of-turn special token(s) right after it (`<|im_end|>`,
        `<|eot_id|>`, `</s>`): what follows them (a newline, a closing eos) is not learned. A template that
        renders earlier turns differently once more messages follow cannot be split this way: say so."""
        split_conversation(messages)
        text = self._chat_template(messages, add_generation_prompt=False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self._chat_template(messages[:i], add_generation_prompt=True)
            through = self._chat_template(messages[: i + 1], add_generation_prompt=False)
            if not text.startswith(prompt) or not through.startswith(prompt):
                raise RlhfxError(
                    "The tokenizer's chat_template renders the start of a conversation differently once more "
                    "messages follow, so the assistant turns to train on cannot be found.", _TEMPLATE_HINT)
            end = len(prompt)
            while end < min(len(through), len(text)) and through[end] == text[end]:
                end += 1
            spans.append((len(prompt), self._turn_end(text, len(prompt), end, message["content"])))
        return text, spans

    def _turn_end(self, text: str, start: int, end: int, content: str) -> int:
        answer = content.strip()
        found = text.rfind(answer, start, end) if answer else -1
        if found >= 0:
            closing = self._closing.match(text, found + len(answer), end)
            if closing:
                return closing.end()
        return start + len(text[start:end].rstrip())

    def _chat_template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      **self._template_kwargs)
        except Exception as error:  # jinja's TemplateError and raise_exception() in the template
            raise RlhfxError(f"The tokenizer's chat_template refused the conversation: {error}",
                             f"Fix the data, or pick a template by name (--template chatml, llama3, ...).") from None

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> list[Segment]:
        eos = self.tokenizer.eos_token
        if _is_raw(messages):
            return [Segment(messages[0]["content"], False)] + [
                Segment(m["content"] + (eos or ""), True) for m in messages[1:] if m["role"] == "assistant"]
        return render(self.template, messages, add_generation_prompt=add_generation_prompt, eos_token=eos)

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tokenize_with_spans(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """One tokenization of the whole text (the ids `apply_chat_template` gives); a token is trained when it
        starts inside a span. Tokenizers without offsets (slow ones) tokenize span by span instead."""
        if getattr(self.tokenizer, "is_fast", False):
            out = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            mask = [int(any(a <= start < b for a, b in spans)) for start, _ in out["offset_mapping"]]
            return list(out["input_ids"]), mask
        ids, mask, at = [], [], 0
        for a, b in [*spans, (len(text), len(text))]:
            for piece, trained in ((text[at:a], 0), (text[a:b], 1)):
                tokens = self._tokenize(piece) if piece else []
                ids, mask = ids + tokens, mask + [trained] * len(tokens)
            at = b
        return ids, mask


def _end_tokens(tokenizer) -> re.Pattern:
    """Whitespace, then one or more special or added tokens back to back: how a template closes a turn."""
    specials = set(tokenizer.all_special_tokens)
    specials |= {str(token) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    alternatives = "|".join(re.escape(t) for t in sorted((t for t in specials if t), key=len, reverse=True))
    return re.compile(rf"\s*(?:{alternatives})+" if alternatives else r"(?!)")


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
