"""From `--model` / `--adapters` flags to a ready engine, tokenizer and chat encoder (shared by infer and sample).

`--model` is `tiny`, a hub id, a local folder, or the output folder of an earlier rlhfx run (its
`args.json` says the model type and template). `--adapters RUN` names a run's output folder: a LoRA
adapter is applied to its base (`--model`, else the base recorded in the adapter), a full-weights run
folder is the model itself; the run's `args.json` gives the template, so a user never repeats flags.
The pt engine merges the adapter into the weights; vLLM serves it as a LoRA adapter.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from rlhfx.engines import Engine, check_engine_available, make_engine, stop_token_ids
from rlhfx.errors import RlhfxError
from rlhfx.templates.choice import TemplateChoice, choose_template
from rlhfx.templates.encoder import ChatEncoder


@dataclass
class ModelSpec:
    path: str  # full weights: a folder or hub id
    adapter: str | None  # a LoRA adapter folder applied on `path`
    tokenizer_path: str
    model_type: object  # rlhfx.registry.models.ModelType
    tokenizer: object
    choice: TemplateChoice  # the chat template and why
    display: str  # how to name the model to the user

    @property
    def template(self) -> str | None:
        """The template's name; None: the tokenizer's own chat_template."""
        return self.choice.name


@dataclass
class Generator:
    engine: Engine
    tokenizer: object
    encoder: ChatEncoder
    spec: ModelSpec


def run_args(folder: str | None) -> dict:
    """The args.json of a run folder; a `checkpoint-*` folder inside a run has its run's."""
    if not folder:
        return {}
    file = Path(folder) / "args.json"
    if not file.is_file() and Path(folder).name.startswith("checkpoint-"):
        file = Path(folder).parent / "args.json"
    from rlhfx.training.models import read_json_file

    return read_json_file(file)


def apply_run_system(args) -> None:
    """Without --system, the system prompt recorded by the run being loaded (--adapters, else a --model run or
    export folder), so a model trained with --system answers with it without the flag being repeated."""
    if "system" in args.explicit:
        return
    folder = args.adapters or (args.model if args.model and Path(args.model).is_dir() else None)
    recorded = run_args(folder).get("system")
    if recorded:
        args.values["system"] = recorded


def _is_adapter(folder: str) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def resolve_model_spec(args) -> ModelSpec:
    from rlhfx.registry.models import resolve_model_type
    from rlhfx.training.models import (_adapter_base, _local_config, check_finished_run, check_model_source,
                                       load_tokenizer, previous_run_model_type, resolve_model_path)

    adapters = args.adapters
    if adapters is not None and not Path(adapters).is_dir():
        raise RlhfxError(f"--adapters folder {adapters} does not exist.",
                         "pass the output folder of an rlhfx run (it holds adapter_config.json or config.json).")
    if adapters is not None:
        check_finished_run(adapters, "--adapters")
    if adapters is None and args.model is None and args.model_type is None:
        raise RlhfxError("No model given.", "pass --model (a hub id, a local folder, or `tiny`) or --adapters RUN_FOLDER.")
    run = run_args(adapters) or run_args(args.model if args.model and Path(args.model).is_dir() else None)

    adapter = None
    if adapters is not None and _is_adapter(adapters):
        adapter = adapters
        base = args.model or _adapter_base(adapters) or run.get("model_path")
        path = resolve_model_path(base, args.model_type)
    elif adapters is not None:
        path = adapters  # a full-weights run folder
    else:
        path = resolve_model_path(args.model, args.model_type)
    if _is_adapter(path):  # --model pointing at an adapter folder
        adapter, path = path, resolve_model_path(_adapter_base(path), None)
    check_model_source(path)

    recorded = run.get("model_type") or previous_run_model_type(path)
    if args.model == "tiny" or (args.model is None and Path(path) == _tiny_path()):
        model_type = resolve_model_type("tiny", args.model_type, None)
    elif args.model_type is None and recorded:
        model_type = resolve_model_type(path, recorded, None)
    else:
        model_type = resolve_model_type(path, args.model_type, _local_config(path).get("architectures"))
    tokenizer_path = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else path
    tokenizer = load_tokenizer(tokenizer_path)
    choice = choose_template(tokenizer, model_type, template=args.template, use_chat_template=args.use_chat_template,
                             explicit_type=args.model_type is not None, run=run or run_args(path))
    display = adapters or args.model or path
    return ModelSpec(path=path, adapter=adapter, tokenizer_path=tokenizer_path, model_type=model_type,
                     tokenizer=tokenizer, choice=choice, display=str(display))


def _tiny_path() -> Path:
    from rlhfx.registry.tiny import cache_root, VERSION

    return cache_root() / f"tiny-{VERSION}"


def load_generator(args, batch_size: int) -> Generator:
    """The engine named by --engine on the model named by --model/--adapters, its tokenizer and encoder."""
    from rlhfx.training.models import load_causal_lm, merge_adapter

    check_engine_available(args.engine)
    spec = resolve_model_spec(args)
    tokenizer, template = spec.tokenizer, spec.choice.template
    encoder = ChatEncoder(tokenizer, template)
    if args.engine == "pt":
        model = load_causal_lm(spec.path, args.torch_dtype)
        if spec.adapter:
            model = merge_adapter(model, spec.adapter)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if _has_cuda():
            model = model.to("cuda")
        stops = stop_token_ids(tokenizer, model.generation_config, template)
        engine = make_engine("pt", model=model, tokenizer=tokenizer, stop_ids=stops, batch_size=batch_size)
    else:
        stops = stop_token_ids(tokenizer, _generation_config(spec.path), template)
        engine = make_engine(
            "vllm", model_path=spec.path, tokenizer=tokenizer, stop_ids=stops, dtype=args.torch_dtype,
            adapter_path=spec.adapter, seed=args.seed, tp_size=args.tp_size,
            enable_prefix_caching=args.enable_prefix_caching, max_num_seqs=args.max_num_seqs,
            gpu_memory_utilization=args.gpu_memory_utilization, kv_cache_memory_gb=args.kv_cache_memory_gb,
            max_lora_rank=_adapter_rank(spec.adapter))
    return Generator(engine=engine, tokenizer=tokenizer, encoder=encoder, spec=spec)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _generation_config(path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return None


def _adapter_rank(adapter: str | None) -> int:
    if not adapter:
        return 16
    rank = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16)
    return next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank)


def sampling_from_args(args, n: int | None = None):
    """A `Sampling` from --best_of_n --max_new_tokens --temperature --top_p --top_k --repetition_penalty --greedy --seed."""
    from rlhfx.engines import Sampling

    sampling = Sampling(n=n if n is not None else args.best_of_n, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_p=args.top_p, top_k=max(0, args.top_k),
                        repetition_penalty=args.repetition_penalty, greedy=args.greedy, seed=args.seed)
    sampling.check()
    return sampling
