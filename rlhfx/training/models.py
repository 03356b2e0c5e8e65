"""Load the policy, its tokenizer, the reference model and the LoRA config for a run.

`--model` is `tiny` (built locally), `smollm2-135m-instruct` (converted once from a pip package), a local
folder (full weights, or a PEFT adapter folder whose base is loaded and merged), or a hub id.
"""

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.registry.models import ModelType, lora_target_modules, resolve_model_type

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    model_type: ModelType
    path: str


def resolve_model_path(model: str | None, model_type: str | None) -> str:
    if model is None:
        if model_type:
            return hub_id_for(model_type)
        raise RlhfxError("No model given.", "pass --model (a hub id, a local folder, or `tiny` for the embedded model).")
    if model == "tiny":
        from rlhfx.registry.tiny import tiny_model_path

        return str(tiny_model_path())
    if model == "smollm2-135m-instruct":
        from rlhfx.registry.smollm2 import smollm2_model_path

        return str(smollm2_model_path())
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model  # absolute: run folders work from any directory


def hub_id_for(model_type: str) -> str:
    """ms-swift style `--model_type qwen2_5-7b-instruct` without --model: the registry's checkpoint of that size."""
    entry = resolve_model_type(None, model_type, None)
    size = re.search(r"(\d+(?:[._]\d+)?b)\b", model_type.lower())
    wanted = size.group(1).replace("_", ".") if size else None
    matches = [h for h in entry.hub_ids if wanted is None or f"-{wanted}" in h.lower()]
    if not matches:
        known = ", ".join(entry.hub_ids) or "none"
        raise RlhfxError(f"--model_type {model_type} names no checkpoint rlhfx knows (known for {entry.name}: {known}).",
                         "pass --model with a hub id or a local folder.")
    return matches[0]


def read_json_file(file: Path) -> dict:
    """A model folder's JSON file, {} when absent; a damaged one (a half-written copy) is a clear error."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise RlhfxError(f"{file} is damaged: not valid JSON ({error}).",
                         "copy or download the model folder again (or finish the run that writes it).") from None
    if not isinstance(data, dict):
        raise RlhfxError(f"{file} is damaged: it holds a JSON {type(data).__name__}, not an object.",
                         "copy or download the model folder again.")
    return data


def _local_config(path: str) -> dict:
    return read_json_file(Path(path) / "config.json")


def _adapter_base(path: str) -> str | None:
    """An adapter folder's base model: adapter_config.json's when it is found from here, else the absolute path its
    rlhfx run recorded in args.json; a clear error when the recorded folder is gone (moved or deleted)."""
    if not (Path(path) / "adapter_config.json").is_file():
        return None
    base = read_json_file(Path(path) / "adapter_config.json").get("base_model_name_or_path")
    recorded = read_json_file(Path(path) / "args.json").get("model_path")
    if base and (Path(base).expanduser().is_dir() or not recorded and not _looks_local(base)):
        return base
    if recorded and (Path(recorded).is_dir() or not Path(recorded).is_absolute()):
        return recorded
    if recorded or base:
        raise RlhfxError(f"The base model of adapter {path} is missing: {recorded or base} (recorded when the adapter "
                         "was trained) does not exist any more.",
                         "pass the base model with --model (a folder or hub id), or move it back.")
    return None


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or path.count("/") > 1


def _dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, DTYPES[name])


def trained_weights_dtype(args) -> str:
    """--torch_dtype for weights the run trains. `auto` keeps fully trained weights in float32 on a GPU too, with
    --bf16 autocasting their matrix products (mixed precision): in pure bfloat16 an update smaller than 1/256 of
    a weight rounds away, so a 5e-7 learning rate moves almost nothing. DeepSpeed keeps float32 master weights
    itself, and LoRA trains float32 adapters over a frozen base, so those load bf16."""
    if args.torch_dtype == "auto" and args.train_type == "full" and not getattr(args, "deepspeed", None):
        return "float32"
    return args.torch_dtype


def _auto_class(model_class: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification}[model_class]


def load_causal_lm(path: str, dtype_name: str = "auto", model_class: str = "causal_lm", args=None):
    """A model from a folder or hub id; an adapter folder is loaded onto its base and merged.

    model_class "sequence_classification" gives a scalar head (num_labels=1) for reward models.
    `args` adds the attention kernel, quantisation and device map flags (rlhfx.training.scale).
    """
    from safetensors import SafetensorError

    from rlhfx.training.scale import model_load_kwargs

    auto = _auto_class(model_class)
    kwargs = {"dtype": _dtype(dtype_name), **({"num_labels": 1} if model_class == "sequence_classification" else {})}
    kwargs.update(model_load_kwargs(args, kwargs["dtype"]) if args is not None else {})
    base = _adapter_base(path)
    try:
        if base is None:
            return auto.from_pretrained(path, **kwargs)
        from peft import PeftModel

        model = auto.from_pretrained(resolve_model_path(base, None), **kwargs)
        return merge_adapter(model, path)
    except OSError as error:
        raise RlhfxError(f"Could not load model {path!r}: {error}",
                         "pass a local folder with config.json and weights, a hub id, or `tiny`.") from None
    except SafetensorError as error:
        raise RlhfxError(f"The weights of model {path!r}{f' or its base {base!r}' if base else ''} are damaged: "
                         f"{error} (a .safetensors file cut short, e.g. by a copy or a save that did not finish).",
                         "copy or download the model again, or finish the run that writes it.") from None


def merge_adapter(model, adapter: str):
    """`model` with the LoRA adapter folder `adapter` merged into its weights.

    A run that added tokens (a reward model's pad token, a PRM's step placeholder) saved its tokenizer and
    resized embeddings with the adapter: the base is resized to that tokenizer first, or the shapes differ.
    """
    from peft import PeftModel

    if (Path(adapter) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        size = len(AutoTokenizer.from_pretrained(adapter))
        if size > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(size)
    from safetensors import SafetensorError

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except SafetensorError as error:
        raise RlhfxError(f"The adapter weights in {adapter} are damaged: {error} (a .safetensors file cut short, e.g. "
                         "by a copy or a save that did not finish).",
                         "copy the adapter folder again, or use one of its run's checkpoint-* folders.") from None


def check_model_source(path: str) -> None:
    """A path-like --model that is not a folder is a typo, not a hub id: say so before any download is tried."""
    if _looks_local(path) and not Path(path).expanduser().is_dir():
        raise RlhfxError(f"Model folder {path} does not exist.",
                         "pass an existing folder with config.json, a hub id like Qwen/Qwen2.5-0.5B-Instruct, or `tiny`.")
    check_finished_run(path, "--model")


def check_finished_run(path: str, flag: str) -> None:
    """An rlhfx run folder without summary.json or final weights (killed before its end): say so instead of failing
    to load it."""
    folder = Path(path).expanduser()
    weights = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
    if not weights and not (folder / "summary.json").exists() and "rlhf_type" in read_json_file(folder / "args.json"):
        steps = [int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
        hint = f"pass its last checkpoint ({folder / f'checkpoint-{max(steps)}'}) to {flag}, or " if steps else ""
        raise RlhfxError(f"{flag} {path} is an unfinished rlhfx run (no summary.json): its final weights were never "
                         "written.", f"{hint}finish it by rerunning its command with --resume_from_checkpoint latest.")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    source = _adapter_base(path) if _adapter_base(path) and not (Path(path) / "tokenizer_config.json").exists() else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(source, None))
    except (OSError, ValueError) as error:
        raise RlhfxError(f"Could not load the tokenizer of {source!r}: {error}",
                         "check the model name, your network or HF_HUB_OFFLINE, or pass a local folder.") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def previous_run_model_type(path: str) -> str | None:
    """The model type recorded in args.json when `path` is the output folder of an earlier rlhfx run."""
    return read_json_file(Path(path) / "args.json").get("model_type")


def policy_model_type(args, path: str) -> ModelType:
    """--model's model type from the flags, an earlier run's args.json or the folder's config (nothing loads)."""
    if args.model == "tiny":
        return resolve_model_type("tiny", args.model_type, None)
    if args.model_type is None and previous_run_model_type(path):
        return resolve_model_type(path, previous_run_model_type(path), None)
    config = _local_config(path) or _local_config(_adapter_base(path) or "")
    return resolve_model_type(path, args.model_type, config.get("architectures"))


def load_policy(args, model_class: str = "causal_lm") -> LoadedModel:
    path = resolve_model_path(args.model, args.model_type)
    check_model_source(path)
    model_type = policy_model_type(args, path)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, trained_weights_dtype(args), model_class, args)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, model_type=model_type, path=path)


def load_reference(args, policy) -> object | None:
    """--ref_model, else a frozen copy for full training, else None (LoRA: the adapter-disabled base; with
    --precompute_ref_log_probs the starting policy computes them once before training)."""
    if args.ref_model:
        ref = load_causal_lm(resolve_model_path(args.ref_model, None), args.torch_dtype, args=args)
    elif args.train_type == "full" and not args.precompute_ref_log_probs:
        ref = copy.deepcopy(policy)
    else:
        return None
    ref.eval().requires_grad_(False)
    return ref


def lora_config(args, model, model_type: ModelType):
    if args.train_type != "lora":
        return None
    from peft import LoraConfig

    spec = args.lora_target_modules
    spec = spec[0] if len(spec) == 1 and spec[0] in ("ALL", "DEFAULT") else spec
    targets = lora_target_modules(model, spec, model_type)
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
