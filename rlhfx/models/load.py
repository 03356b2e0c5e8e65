"""Load what `resolve_model` names: weights (an adapter merged onto its base), tokenizer, dtype, the policy and
reference of a run, its LoRA config, and the from_pretrained keywords of the attention/quantisation flags.

Each check runs before any weights load where it can, so a launch that cannot work fails in a second with a fix.
"""

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.models.resolve import adapter_base, read_json_file, resolve_model, resolve_model_path
from rlhfx.registry.models import ModelType, lora_target_modules

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    model_type: ModelType
    path: str


def torch_dtype(name: str):
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


def bf16_enabled(args) -> bool:
    import torch

    if args.bf16 is not None:
        return args.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # bfloat16 weights on the CPU: autocast too, so that float32 parts (a LoRA reward model's score head, which PEFT
    # keeps in float32) meet bfloat16 activations in bfloat16 matmuls instead of failing with a dtype mismatch
    return args.torch_dtype == "bfloat16"


def quant_bits(args) -> int | None:
    if args.load_in_4bit and args.quant_bits not in (None, 4):
        raise RlhfxError(f"--load_in_4bit and --quant_bits {args.quant_bits} disagree.", "give one of them.")
    bits = 4 if args.load_in_4bit else args.quant_bits
    if args.quant_method and not bits:
        raise RlhfxError(f"--quant_method {args.quant_method} quantises with --quant_bits 4 or 8, which is not given.",
                         "add --quant_bits 4 (QLoRA) or 8, or drop --quant_method.")
    return bits


def check_flash_attn_device(args) -> None:
    """Checked before anything loads (rlhfx.algos.job.validate, also before a torchrun relaunch)."""
    import torch

    if args.flash_attn and not torch.cuda.is_available():
        flag = f"--attn_impl {args.attn_impl}" if args.attn_impl else "--flash_attn"
        raise RlhfxError(f"{flag} needs a CUDA GPU; none is visible.", f"drop {flag} (CPU runs use sdpa).")


def model_load_kwargs(args, dtype) -> dict:
    """from_pretrained keywords for --flash_attn, --quant_bits/--load_in_4bit and --device_map, with clear errors."""
    import torch

    kwargs = {}
    if args.flash_attn:
        check_flash_attn_device(args)
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise RlhfxError("--flash_attn needs the flash_attn package, which is not installed.",
                             "pip install flash-attn --no-build-isolation, or drop --flash_attn.") from None
        if dtype == torch.float32 and not bf16_enabled(args):
            raise RlhfxError("--flash_attn computes in bf16 or fp16, but these float32 weights run without --bf16 "
                             "autocast.", "drop --bf16 false (bf16 is the default on GPUs), or pass --torch_dtype "
                             "bfloat16, or drop --flash_attn.")
        kwargs["attn_implementation"] = "flash_attention_2"
    elif args.attn_impl in ("sdpa", "eager"):
        kwargs["attn_implementation"] = args.attn_impl
    bits = quant_bits(args)
    if bits:
        if args.train_type != "lora":
            raise RlhfxError(f"--quant_bits {bits} freezes the base weights in {bits} bits; only adapters can train.",
                             "add --train_type lora (QLoRA).")
        if not torch.cuda.is_available():
            raise RlhfxError(f"--quant_bits {bits} (QLoRA) uses bitsandbytes CUDA kernels; no CUDA GPU is visible.",
                             "run on a GPU machine, or drop --quant_bits/--load_in_4bit.")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise RlhfxError(f"--quant_bits {bits} needs the bitsandbytes package, which is not installed.",
                             "pip install 'rlhfx[quant]'.") from None
        from transformers import BitsAndBytesConfig

        four_bit = dict(bnb_4bit_quant_type=args.bnb_4bit_quant_type, bnb_4bit_use_double_quant=True,
                        bnb_4bit_compute_dtype=dtype)
        kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True, **four_bit) if bits == 4
                                         else BitsAndBytesConfig(load_in_8bit=True))
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if args.device_map:
        kwargs["device_map"] = args.device_map
    return kwargs


def _auto_class(model_class: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification}[model_class]


def load_causal_lm(path: str, dtype_name: str = "auto", model_class: str = "causal_lm", args=None):
    """A model from a folder or hub id; an adapter folder is loaded onto its base and merged.

    model_class "sequence_classification" gives a scalar head (num_labels=1) for reward models.
    `args` adds the attention kernel, quantisation and device map flags (model_load_kwargs).
    """
    from safetensors import SafetensorError

    auto = _auto_class(model_class)
    kwargs = {"dtype": torch_dtype(dtype_name), **({"num_labels": 1} if model_class == "sequence_classification" else {})}
    kwargs.update(model_load_kwargs(args, kwargs["dtype"]) if args is not None else {})
    base = adapter_base(path)
    try:
        if base is None:
            return auto.from_pretrained(path, **kwargs)
        model = auto.from_pretrained(resolve_model_path(base, None), **kwargs)
        return merge_adapter(model, path)
    except OSError as error:
        raise RlhfxError(f"Could not load model {path!r}: {error}",
                         "pass a local folder with config.json and weights, a hub id, or `tiny`.") from None
    except SafetensorError as error:
        raise RlhfxError(f"The weights of model {path!r}{f' or its base {base!r}' if base else ''} are damaged: "
                         f"{error} (a .safetensors file cut short, e.g. by a copy or a save that did not finish).",
                         "copy or download the model again, or finish the run that writes it.") from None


def model_skeleton(path: str, model_class: str = "causal_lm"):
    """The model's modules on the meta device (no memory), with its config and generation config: what the Ray
    driver reads (module names for LoRA targets, tied embeddings, stop tokens), while the role actors load the
    weights. A 70B policy and its reference would otherwise take ~280 GB of the driver's host memory for nothing."""
    import torch
    from transformers import AutoConfig

    base = adapter_base(path)
    source = resolve_model_path(base, None) if base else path
    try:
        config = AutoConfig.from_pretrained(source, **({"num_labels": 1} if model_class == "sequence_classification" else {}))
    except OSError as error:
        raise RlhfxError(f"Could not load model {path!r}: {error}",
                         "pass a local folder with config.json and weights, a hub id, or `tiny`.") from None
    with torch.device("meta"):
        model = _auto_class(model_class).from_config(config)
    generation = generation_config(source)
    if generation is not None:
        model.generation_config = generation
    if base:
        check_adapter_targets(model, path)
    return model


def generation_config(path: str):
    """The model folder's generation_config.json (its stop tokens), None without one."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return None


def check_adapter_targets(model, adapter: str) -> None:
    """An adapter folder to merge into `model` must not target its tied embeddings (check_tied_targets)."""
    targets = read_json_file(Path(adapter) / "adapter_config.json").get("target_modules") or []
    check_tied_targets(model, [targets] if isinstance(targets, str) else targets, f"The LoRA adapter in {adapter} targets",
                       "load the adapter unmerged (peft.PeftModel.from_pretrained), or retrain without those targets.")


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

    check_adapter_targets(model, adapter)
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except SafetensorError as error:
        raise RlhfxError(f"The adapter weights in {adapter} are damaged: {error} (a .safetensors file cut short, e.g. "
                         "by a copy or a save that did not finish).",
                         "copy the adapter folder again, or use one of its run's checkpoint-* folders.") from None


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    source = adapter_base(path) if adapter_base(path) and not (Path(path) / "tokenizer_config.json").exists() else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(source, None))
    except (OSError, ValueError) as error:
        raise RlhfxError(f"Could not load the tokenizer of {source!r}: {error}",
                         "check the model name, your network or HF_HUB_OFFLINE, or pass a local folder.") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(args, model_class: str = "causal_lm", weights: bool = True) -> LoadedModel:
    """The model a run trains; `path` is what --model named (an adapter folder stays one: it is merged on load).
    Without `weights`, the model's skeleton (model_skeleton) for a process that trains none of them itself."""
    resolved = resolve_model(args.model, args.model_type)
    tokenizer = load_tokenizer(resolved.tokenizer_path)
    model = (load_causal_lm(resolved.source, trained_weights_dtype(args), model_class, args) if weights
             else model_skeleton(resolved.source, model_class))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, model_type=resolved.model_type, path=resolved.source)


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


def lora_config(args, model, model_type: ModelType, head_trains: bool = False, merges: bool = False):
    """The LoRA adapter --train_type lora asks for; `head_trains`: the trainer's loss runs the output head's forward;
    `merges`: the run merges the adapter into the weights while it trains (weights pushed to vLLM or Ray engines),
    which an adapter on tied embeddings does not survive (check_tied_targets)."""
    if args.train_type != "lora":
        return None
    from peft import LoraConfig

    spec = args.lora_target_modules
    spec = spec[0] if len(spec) == 1 and spec[0] in ("ALL", "DEFAULT") else spec
    targets = lora_target_modules(model, spec, model_type, head_trains)
    if merges:
        check_tied_targets(model, targets, "--lora_target_modules includes",
                           "drop {} from --lora_target_modules, or use --train_type full.")
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def check_tied_targets(model, targets: list[str], what: str, fix: str) -> None:
    """Refuse an adapter on a layer whose weight the input embeddings and the output head share: merging it (rlhfx
    export --merge_lora, the vLLM engine's weight sync, a LoRA run as --model) changes that one weight for both uses,
    so the merged model is not the adapter's (PEFT 0.21's ensure_weight_tying ties the two adapters but merges their
    delta twice). `what` starts the message; `fix` may name the layers with {}."""
    tied = tied_targets(model, targets)
    if tied:
        raise RlhfxError(f"{what} {tied}, but this model ties its input embeddings and output head to one weight: "
                         "merging the adapter (rlhfx export --merge_lora, the vLLM engine's weight sync, a LoRA run "
                         "as --model) would change that weight for both uses, so the merged model would differ from "
                         "the trained adapter.", fix.format(tied))


def tied_targets(model, targets: list[str]) -> str:
    """The targets among the input embeddings and the output head when the two share one weight ("" when none)."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or head.weight is not embed.weight:
        return ""
    names = {module: name for name, module in model.named_modules()}
    return " and ".join(names[m].rsplit(".", 1)[-1] for m in (embed, head)
                        if any(names[m] == t or names[m].endswith("." + t) for t in targets))
