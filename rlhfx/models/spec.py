"""A resolved model with its tokenizer and chat template: what infer, sample, export, data and reward models encode
prompts with (the run's `args.json` gives the template, so a user never repeats flags)."""

from dataclasses import dataclass

from rlhfx.models.load import load_tokenizer
from rlhfx.models.resolve import ResolvedModel, resolve_model
from rlhfx.templates.choice import TemplateChoice, choose_template


@dataclass
class ModelSpec:
    resolved: ResolvedModel
    tokenizer: object
    choice: TemplateChoice  # the chat template and why

    @property
    def path(self) -> str:
        return self.resolved.path

    @property
    def adapter(self) -> str | None:
        return self.resolved.adapter

    @property
    def model_type(self):
        return self.resolved.model_type

    @property
    def display(self) -> str:
        return self.resolved.display

    @property
    def template(self) -> str | None:
        """The template's name; None: the tokenizer's own chat_template."""
        return self.choice.name


def resolve_model_spec(model: str | None, model_type: str | None = None, adapters: str | None = None,
                       template: str | None = None, use_chat_template: bool = False,
                       enable_thinking: bool | None = None) -> ModelSpec:
    resolved = resolve_model(model, model_type, adapters)
    tokenizer = load_tokenizer(resolved.tokenizer_path)
    choice = choose_template(tokenizer, resolved.model_type, template=template, use_chat_template=use_chat_template,
                             explicit_type=model_type is not None, run=resolved.run, enable_thinking=enable_thinking)
    return ModelSpec(resolved=resolved, tokenizer=tokenizer, choice=choice)


def model_spec_from_args(args) -> ModelSpec:
    """resolve_model_spec for the --model --model_type --adapters --template --use_chat_template --enable_thinking
    flags (export renders nothing, so it does not take --enable_thinking)."""
    return resolve_model_spec(args.model, args.model_type, args.adapters, args.template, args.use_chat_template,
                              args.values.get("enable_thinking"))
