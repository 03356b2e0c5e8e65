"""Generation throughput: rlhfx's pt engine vs a plain `model.generate` loop, and vLLM vs pt, on the same prompts.

The prompts are the first `--prompts` demo prompts rendered with the ChatML template; each gets `--n` samples
of up to `--max_new_tokens` tokens at temperature 1 (random weights rarely emit EOS, so nearly every
sample is full length; tokens/s counts what was really generated). Models (random weights, same tokenizer):
  tiny   the embedded model (hidden 128, 2 layers, ~0.35M parameters)
  small  hidden 512, 6 layers, head_dim 64 (~19M parameters)
Baseline "plain loop": one `model.generate(prompt, num_return_sequences=n)` call per prompt, as a script
without an engine would do. The vLLM rows need vLLM: run this with .venv-vllm/bin/python (scripts/setup_vllm.sh)
to get all three; in .venv only pt and the loop are measured. Each measurement is the best of `--repeats`;
torch runs on `--threads` CPU threads (default 1, as vLLM's CPU worker does here).
Writes benchmarks/results/generation.json (merging with rows measured by the other venv).
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

SIZES = {
    "tiny": None,
    "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=8, head_dim=64, max_position_embeddings=512, tie_word_embeddings=True),
}


def build_model(size: str, folder: Path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_path()))
    if SIZES[size] is None:
        return str(tiny_model_path()), load_causal_lm(str(tiny_model_path())), tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SIZES[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), model, tokenizer


def prompts_for(tokenizer, count: int) -> list[list[int]]:
    from rlhfx.registry.demo_task import DATA_DIR
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template

    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    lines = (DATA_DIR / "demo_prompts_train.jsonl").read_text().splitlines()[:count]
    return [encoder.encode_prompt([{"role": "user", "content": json.loads(line)["prompt"]}]) for line in lines]


def best_of(repeats: int, run) -> tuple[float, int]:
    """(seconds, generated tokens) of the fastest of `repeats` runs."""
    results = [run() for _ in range(repeats)]
    return min(results, key=lambda r: r[0])


def plain_loop(model, tokenizer, prompts, n, max_new_tokens):
    import torch

    start, tokens = time.perf_counter(), 0
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                 num_return_sequences=n, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            tokens += _count(out[:, ids.shape[1]:].tolist(), tokenizer.eos_token_id)
    return time.perf_counter() - start, tokens


def engine_run(engine, prompts, n, max_new_tokens):
    from rlhfx.engines import Sampling

    start = time.perf_counter()
    results = engine.generate(prompts, Sampling(n=n, max_new_tokens=max_new_tokens, temperature=1.0, seed=0))
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for samples in results for c in samples)


def record(row: dict, name: str, measured: tuple[float, int]) -> None:
    seconds, tokens = measured
    samples = row["prompts"] * row["n"]
    row[name] = {"seconds": seconds, "samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds}


def _count(rows, eos) -> int:
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16, help="pt engine: prompts per generate call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for pt and the loop (vLLM's CPU backend uses 1 per worker)")
    parser.add_argument("--skip_loop", action="store_true", help="leave out the (slow) plain generate loop")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    opts = parser.parse_args()

    import torch
    import transformers

    from rlhfx.engines import make_engine

    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError:
        vllm_version = None
    torch.set_num_threads(opts.threads)
    out_path = Path(opts.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.setdefault("runs", {})
    rows, models = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        # pt and the plain loop first for every size: starting vLLM on CPU pins torch's thread count
        for size in opts.sizes.split(","):
            path, model, tokenizer = build_model(size, Path(tmp) / size)
            models[size] = (path, tokenizer)
            prompts = prompts_for(tokenizer, opts.prompts)
            rows[size] = row = {"parameters": sum(p.numel() for p in model.parameters()), "prompts": len(prompts),
                                "n": opts.n, "max_new_tokens": opts.max_new_tokens, "pt_batch_size": opts.batch_size,
                                "torch_threads": torch.get_num_threads(), "repeats": opts.repeats}
            pt = make_engine("pt", model=model, tokenizer=tokenizer, stop_ids=[tokenizer.eos_token_id],
                             batch_size=opts.batch_size)
            engine_run(pt, prompts[:2], opts.n, 4)  # warm-up
            record(row, "pt", best_of(opts.repeats, lambda: engine_run(pt, prompts, opts.n, opts.max_new_tokens)))
            if not opts.skip_loop:
                record(row, "plain_loop", best_of(opts.repeats, lambda: plain_loop(model, tokenizer, prompts, opts.n,
                                                                                     opts.max_new_tokens)))
                row["pt_over_plain_loop"] = row["pt"]["samples_per_s"] / row["plain_loop"]["samples_per_s"]
            del model, pt
        if vllm_version:
            for size, (path, tokenizer) in models.items():
                row, prompts = rows[size], prompts_for(tokenizer, opts.prompts)
                start = time.perf_counter()
                engine = make_engine("vllm", model_path=path, tokenizer=tokenizer, stop_ids=[tokenizer.eos_token_id],
                                     kv_cache_memory_gb=1.0)
                row["vllm_startup_seconds"] = time.perf_counter() - start
                engine_run(engine, prompts[:2], opts.n, 4)  # warm-up
                record(row, "vllm", best_of(opts.repeats, lambda: engine_run(engine, prompts, opts.n,
                                                                             opts.max_new_tokens)))
                row["vllm_over_pt"] = row["vllm"]["samples_per_s"] / row["pt"]["samples_per_s"]
                engine.close()
    for size, row in rows.items():
        for name in ("pt", "plain_loop", "vllm"):
            if name in row:
                r = row[name]
                print(f"{size:>6} {name:<11} {r['seconds']:7.2f} s {r['samples_per_s']:8.1f} samples/s "
                      f"{r['tokens_per_s']:9.1f} tokens/s")
        for ratio in ("pt_over_plain_loop", "vllm_over_pt"):
            if ratio in row:
                print(f"{size:>6} {ratio}: {row[ratio]:.2f}x")
        key = f"{size}|{'vllm-venv' if vllm_version else 'main-venv'}"
        results["runs"][key] = {**row, "torch": torch.__version__, "transformers": transformers.__version__,
                                "vllm_version": vllm_version, "machine": f"{platform.machine()} {os.cpu_count()} cpus "
                                                                 f"python {platform.python_version()}",
                                "measured": time.strftime("%Y-%m-%d %H:%M")}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
