"""Model types: which chat template, LoRA targets and architecture a model family uses, and how
a model is recognised from its name, its config's architectures or an ms-swift style `--model_type`."""

import difflib
import re
from dataclasses import dataclass

from rlhfx.errors import RlhfxError


@dataclass(frozen=True)
class ModelType:
    name: str
    template: str  # a key of rlhfx.templates.templates.TEMPLATES
    lora_targets: tuple[str, ...]  # the attention projections; empty: every Linear layer
    architecture: str  # the transformers class in config.architectures; empty: any
    hub_ids: tuple[str, ...]  # known checkpoints of this type


_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

MODEL_TYPES: dict[str, ModelType] = {
    m.name: m
    for m in (
        ModelType("tiny", "chatml", _ATTENTION, "LlamaForCausalLM", ()),  # built locally by rlhfx
        ModelType(
            "llama2",
            "llama2",
            _ATTENTION,
            "LlamaForCausalLM",
            ("meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-13b-chat-hf", "meta-llama/Llama-2-70b-chat-hf"),
        ),
        ModelType(
            "llama3",
            "llama3",
            _ATTENTION,
            "LlamaForCausalLM",
            ("meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-70B-Instruct"),
        ),
        ModelType(
            "llama3.1",
            "llama3.1",
            _ATTENTION,
            "LlamaForCausalLM",
            ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"),
        ),
        ModelType(
            "llama3.2",
            "llama3.2",
            _ATTENTION,
            "LlamaForCausalLM",
            ("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"),
        ),
        ModelType(
            "qwen2",
            "qwen2",
            _ATTENTION,
            "Qwen2ForCausalLM",
            ("Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen2-7B-Instruct"),
        ),
        ModelType(
            "qwen2.5",
            "qwen2.5",
            _ATTENTION,
            "Qwen2ForCausalLM",
            ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
        ),
        ModelType(
            "mistral",
            "mistral",
            _ATTENTION,
            "MistralForCausalLM",
            ("mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mistral-7B-Instruct-v0.2"),
        ),
        ModelType("gemma", "gemma", _ATTENTION, "GemmaForCausalLM", ("google/gemma-2b-it", "google/gemma-7b-it")),
        ModelType(
            "gemma2",
            "gemma",
            _ATTENTION,
            "Gemma2ForCausalLM",
            ("google/gemma-2-2b-it", "google/gemma-2-9b-it", "google/gemma-2-27b-it"),
        ),
        ModelType(
            "phi3",
            "phi3",
            ("qkv_proj", "o_proj"),
            "Phi3ForCausalLM",
            ("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3.5-mini-instruct"),
        ),
        ModelType(
            "deepseek",
            "deepseek",
            _ATTENTION,
            "LlamaForCausalLM",
            ("deepseek-ai/deepseek-llm-7b-chat", "deepseek-ai/deepseek-llm-67b-chat"),
        ),
        ModelType("yi", "chatml", _ATTENTION, "LlamaForCausalLM", ("01-ai/Yi-6B-Chat", "01-ai/Yi-34B-Chat")),
        ModelType("default", "default", (), "", ()),
    )
}

# Searched in order in the model's folder or repository name, lower-cased, "_" between digits read as ".".
_NAME_PATTERNS = (
    (r"llama-?3\.2", "llama3.2"),
    (r"llama-?3\.1", "llama3.1"),
    (r"llama-?3(?!\d)", "llama3"),
    (r"llama-?2(?!\d)", "llama2"),
    (r"qwen2\.5", "qwen2.5"),
    (r"qwen2(?!\d)", "qwen2"),
    (r"mistral", "mistral"),
    (r"gemma-?2(?![\db])", "gemma2"),  # not gemma-2b, a Gemma 1 model
    (r"gemma", "gemma"),
    (r"phi-?3", "phi3"),
    (r"deepseek-llm", "deepseek"),
    (r"^yi[-.]", "yi"),
)
# Shared by families with different chat formats, so it says nothing about the template.
_AMBIGUOUS_ARCHITECTURES = {"LlamaForCausalLM"}


def resolve_model_type(model: str | None, model_type: str | None, config_architectures: list[str] | None) -> ModelType:
    """An explicit `model_type` wins; then the model's name; then its config's architectures; else `default`."""
    if model_type:
        return _from_explicit_name(model_type)
    if model == "tiny":
        return MODEL_TYPES["tiny"]
    if model:
        by_hub_id = {hub_id.lower(): m for m in MODEL_TYPES.values() for hub_id in m.hub_ids}
        if model.lower() in by_hub_id:
            return by_hub_id[model.lower()]
        name = _normalise(model.rstrip("/").rsplit("/", 1)[-1])
        for pattern, type_name in _NAME_PATTERNS:
            if re.search(pattern, name):
                return MODEL_TYPES[type_name]
    for architecture in config_architectures or []:
        if architecture in _AMBIGUOUS_ARCHITECTURES:
            continue
        for m in MODEL_TYPES.values():
            if m.architecture == architecture:
                return m
    return MODEL_TYPES["default"]


def _normalise(name: str) -> str:
    return re.sub(r"(?<=\d)_(?=\d)", ".", name.lower())


def _from_explicit_name(model_type: str) -> ModelType:
    """Accept registry names and ms-swift style names such as `llama3-8b-instruct` or `qwen2_5-7b`:
    the longest registry name that the given name starts with, followed by its end or "-"."""
    name = _normalise(model_type)
    matches = [n for n in MODEL_TYPES if name == n or name.startswith(n + "-")]
    if matches:
        return MODEL_TYPES[max(matches, key=len)]
    close = difflib.get_close_matches(name.split("-")[0], MODEL_TYPES, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    raise RlhfxError(
        f"Unknown --model_type '{model_type}'.",
        f"{hint}Known model types: {', '.join(MODEL_TYPES)}; or leave --model_type out to detect it from --model.",
    )


# Output heads: never LoRA targets (language-model head, reward/value heads, classifiers).
_HEAD_NAMES = {"lm_head", "score", "v_head", "classifier"}


def lora_target_modules(model, spec: str | list[str], model_type: ModelType, head_trains: bool = False) -> list[str]:
    """Module names for PEFT's `target_modules`.

    "ALL": every Linear layer but the output heads, by last name component (q_proj, ..., down_proj).
    "DEFAULT": the model type's attention projections (every Linear layer when it lists none).
    Otherwise names, comma-separated or a list, each checked to exist in the model; ALL (ms-swift: all-linear)
    among other names stands for the Linear layers plus those (`all-linear embed_tokens lm_head`).
    The output head is a target only where `head_trains`: the loss runs the head's forward (rlhfx's online RL)."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    keyword = names[0].upper() if len(names) == 1 else None
    if keyword in ("ALL", "ALL-LINEAR") or (keyword == "DEFAULT" and not model_type.lora_targets):
        return linear_layer_names(model)
    if keyword == "DEFAULT":
        names = list(model_type.lora_targets)
    if len(names) > 1 and {n.upper() for n in names} & {"ALL", "ALL-LINEAR"}:
        names = list(dict.fromkeys(linear_layer_names(model) + [n for n in names if n.upper() not in ("ALL", "ALL-LINEAR")]))
    if not names:
        raise RlhfxError("--lora_target_modules is empty.", "Give ALL, DEFAULT or module names such as q_proj,v_proj.")
    module_names = [n for n, _ in model.named_modules()]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((n for n, m in model.named_modules() if head is not None and m is head), None)
    if head_name and head_name.rsplit(".", 1)[-1] in names and not head_trains:
        raise RlhfxError(f"--lora_target_modules includes the output head {head_name}: TRL's SFT, DPO and KTO trainers "
                         "(and those built on them) compute the log-probabilities from its weight directly, so an "
                         "adapter there would never train.",
                         f"drop {head_name.rsplit('.', 1)[-1]} (the Linear layers can take adapters); the online RL types "
                         "(ppo, grpo, rloo, reinforce_pp) run the head's forward and train one where it does not share "
                         "the input embeddings' weight.")
    missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in module_names)]
    if missing:
        raise RlhfxError(
            f"--lora_target_modules names modules the model does not have: {', '.join(missing)}.",
            f"Use ALL, DEFAULT or some of this model's Linear layers: {', '.join(linear_layer_names(model))}.",
        )
    return names


def linear_layer_names(model) -> list[str]:
    """Every Linear layer but the output heads, by last name component: LoRA's "ALL" (the PPO critic's too)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for full_name, module in model.named_modules():
        short = full_name.rsplit(".", 1)[-1]
        is_head = module is head or short in _HEAD_NAMES
        if isinstance(module, torch.nn.Linear) and not is_head and short not in names:
            names.append(short)
    return names
