"""Which chat template a run uses, and why (printed in the run header, recorded in args.json).

In order: --use_chat_template (the tokenizer's own); --template NAME; the template recorded by the run a
model folder comes from; the registry's template for a known model type (by --model_type, name or config);
for a model the registry does not know, its tokenizer's own chat_template; only a tokenizer without one
gets rlhfx's generic `default` format, and the reason says so.
"""

from dataclasses import dataclass

from rlhfx.templates.encoder import has_generation_markers
from rlhfx.templates.templates import Template, get_template


@dataclass(frozen=True)
class TemplateChoice:
    template: Template | None  # None: the tokenizer's own chat_template
    reason: str

    @property
    def name(self) -> str | None:
        return self.template.name if self.template else None

    def describe(self) -> str:
        return f"{self.name or 'the tokenizer chat_template'} ({self.reason})"


def choose_template(tokenizer, model_type, *, template: str | None = None, use_chat_template: bool = False,
                    explicit_type: bool = False, run: dict | None = None) -> TemplateChoice:
    """`model_type` is the registry's ModelType; `explicit_type` when the user named it (--model_type);
    `run` the args.json of the run the model folder comes from (its "template" is reused)."""
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
