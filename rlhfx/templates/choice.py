"""Which chat template a run uses, and why (printed in the run header, recorded in args.json).

In order: --use_chat_template (the tokenizer's own); --template NAME; the template recorded by the run a
model folder comes from; the registry's template for a known model type (by --model_type, name or config);
for a model the registry does not know, its tokenizer's own chat_template; only a tokenizer without one
gets rlhfx's generic `default` format, and the reason says so.

--enable_thinking (ms-swift's switch of hybrid-thinking templates such as Qwen3's) is passed to a tokenizer
chat_template that reads `enable_thinking`; for any other template the choice carries a note saying it changes nothing.
"""

from dataclasses import dataclass, replace

from rlhfx.templates.encoder import ChatEncoder, has_generation_markers
from rlhfx.templates.templates import Template, get_template


@dataclass(frozen=True)
class TemplateChoice:
    template: Template | None  # None: the tokenizer's own chat_template
    reason: str
    enable_thinking: bool | None = None  # --enable_thinking, for a chat_template that reads it
    thinking_note: str | None = None  # --enable_thinking given for a template that does not read it

    def encoder(self, tokenizer, train_on: str = "all") -> ChatEncoder:
        """The encoder that renders with this choice."""
        return ChatEncoder(tokenizer, self.template, train_on=train_on, enable_thinking=self.enable_thinking)

    @property
    def name(self) -> str | None:
        return self.template.name if self.template else None

    def describe(self) -> str:
        return f"{self.name or 'the tokenizer chat_template'} ({self.reason})"


def choose_template(tokenizer, model_type, *, template: str | None = None, use_chat_template: bool = False,
                    explicit_type: bool = False, run: dict | None = None,
                    enable_thinking: bool | None = None) -> TemplateChoice:
    """`model_type` is the registry's ModelType; `explicit_type` when the user named it (--model_type);
    `run` the args.json of the run the model folder comes from (its "template" is reused)."""
    choice = _choose(tokenizer, model_type, template, use_chat_template, explicit_type, run)
    if enable_thinking is None:
        return choice
    own = getattr(tokenizer, "chat_template", None)
    if choice.template is None and isinstance(own, str) and "enable_thinking" in own:
        return replace(choice, enable_thinking=enable_thinking)
    return replace(choice, thinking_note=f"--enable_thinking {str(enable_thinking).lower()}: "
                   f"{choice.name or 'the tokenizer chat_template'} does not read enable_thinking (no thinking "
                   "switch), so it renders the same either way.")


def _choose(tokenizer, model_type, template, use_chat_template, explicit_type, run) -> TemplateChoice:
    own = getattr(tokenizer, "chat_template", None)
    if use_chat_template:
        return TemplateChoice(None, f"--use_chat_template; {_mask_note(own)}")
    if template:
        return TemplateChoice(get_template(template), f"--template {template}")
    if run and "template" in run:
        recorded = run["template"]
        return TemplateChoice(get_template(recorded) if recorded else None, "recorded in the run's args.json")
    if model_type.name != "default" or explicit_type:
        how = "--model_type" if explicit_type else "registry model type"
        return TemplateChoice(get_template(model_type.template), f"{how} {model_type.name}")
    if own:
        return TemplateChoice(None, f"model not in the registry, so its tokenizer's own; {_mask_note(own)}")
    return TemplateChoice(get_template("default"),
                          "model not in the registry and its tokenizer has no chat_template: rlhfx's generic "
                          "User:/Assistant: format; pass --template NAME for a chat model")


def _mask_note(chat_template) -> str:
    if has_generation_markers(chat_template):
        return "loss mask from its {% generation %} markers"
    return "loss mask by rendering the conversation prefix by prefix"
