"""From `--model` / `--adapters` flags to a ready engine, tokenizer and chat encoder (shared by infer and sample).

The model, adapter and template are resolved by rlhfx.models (ModelSpec). The pt engine merges the
adapter into the weights; vLLM serves it as a LoRA adapter.
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

from rlhfx.engines import Engine, check_engine_available, make_engine, stop_token_ids
from rlhfx.models import ModelSpec, generation_config, load_causal_lm, merge_adapter
from rlhfx.templates.encoder import ChatEncoder


@dataclass(frozen=True)
class EngineOptions:
    """--engine and what it runs with: the generation flags that are not about sampling."""

    engine: str
    torch_dtype: str
    seed: int
    tp_size: int
    enable_prefix_caching: bool
    max_num_seqs: int | None
    gpu_memory_utilization: float
    kv_cache_memory_gb: float | None

    @classmethod
    def from_args(cls, args) -> "EngineOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class Generator:
    engine: Engine
    tokenizer: object
    encoder: ChatEncoder
    spec: ModelSpec


def load_generator(spec: ModelSpec, options: EngineOptions, batch_size: int) -> Generator:
    """The engine `options.engine` on the model `spec` (rlhfx.models.model_spec_from_args), its tokenizer and encoder."""
    check_engine_available(options.engine)
    tokenizer, template = spec.tokenizer, spec.choice.template
    encoder = spec.choice.encoder(tokenizer)
    if spec.choice.thinking_note:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]note:[/yellow] {spec.choice.thinking_note}", highlight=False)
    if options.engine == "pt":
        model = load_causal_lm(spec.path, options.torch_dtype)
        if spec.adapter:
            model = merge_adapter(model, spec.adapter)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if _has_cuda():
            model = model.to("cuda")
        stops = stop_token_ids(tokenizer, model.generation_config, template)
        engine = make_engine("pt", model=model, tokenizer=tokenizer, stop_ids=stops, batch_size=batch_size)
    else:
        stops = stop_token_ids(tokenizer, generation_config(spec.path), template)
        engine = make_engine(
            "vllm", model_path=spec.path, tokenizer=tokenizer, stop_ids=stops, dtype=options.torch_dtype,
            adapter_path=spec.adapter, seed=options.seed, tp_size=options.tp_size,
            enable_prefix_caching=options.enable_prefix_caching, max_num_seqs=options.max_num_seqs,
            gpu_memory_utilization=options.gpu_memory_utilization, kv_cache_memory_gb=options.kv_cache_memory_gb,
            max_lora_rank=_adapter_rank(spec.adapter))
    return Generator(engine=engine, tokenizer=tokenizer, encoder=encoder, spec=spec)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
