"""From `--model` / `--adapters` flags to a ready engine, tokenizer and chat encoder (shared by infer and sample).

The model, adapter and template are resolved by rlhfx.models (model_spec_from_args). The pt engine merges the
adapter into the weights; vLLM serves it as a LoRA adapter.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from rlhfx.engines import Engine, check_engine_available, make_engine, stop_token_ids
from rlhfx.models import ModelSpec, load_causal_lm, merge_adapter, model_spec_from_args
from rlhfx.templates.encoder import ChatEncoder


@dataclass
class Generator:
    engine: Engine
    tokenizer: object
    encoder: ChatEncoder
    spec: ModelSpec


def load_generator(args, batch_size: int) -> Generator:
    """The engine named by --engine on the model named by --model/--adapters, its tokenizer and encoder."""
    check_engine_available(args.engine)
    spec = model_spec_from_args(args)
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
