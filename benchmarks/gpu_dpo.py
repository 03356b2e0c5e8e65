"""DPO on one GPU with a Llama-3.2-1B-shaped model, bf16 and flash attention: step time, tokens/s, MFU, memory.

The GPU machine has no model hub, so the model is the real architecture at its real size (16 layers, hidden
2048, GQA 32/8 heads, vocabulary 128256, tied embeddings; 1.24B parameters) with random weights and the tiny
model's tokenizer. Every row has exactly the same token count, so batches carry no padding and sdpa can run
its FlashAttention kernel; gpu_probe/sitecustomize.py switches every other attention kernel off in the runs,
so a run that needed another one would fail rather than be reported as flash attention.

Each mode is one `rlhfx rlhf --rlhf_type dpo` process; step time is the wall-clock time between the logged
steps after the warm-up ones (metrics.jsonl records the time of every log event).

MFU counts model FLOPs, not recomputation (PaLM, appendix B): per token, a full-training policy step costs
6N + 12 L d s, a LoRA step 4N + 12 L d s (frozen weights need no weight gradients), a reference forward
2N + 4 L d s, with N the parameters of every matrix product (the output head included), L layers, d the
hidden size and s the sequence length. The peak is the GPU's dense bf16 rate (989 TFLOP/s for H100/H200 SXM).
Writes benchmarks/results/gpu_dpo.json.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
LLAMA_3_2_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                    max_position_embeddings=4096)
MODES = {
    "full": ["--train_type", "full"],
    "full_gradient_checkpointing": ["--train_type", "full", "--gradient_checkpointing", "true"],
    "full_pure_bf16": ["--train_type", "full", "--torch_dtype", "bfloat16"],
    "full_precompute_ref": ["--train_type", "full", "--precompute_ref_log_probs", "true"],
    "lora_r16": ["--train_type", "lora", "--lora_rank", "16", "--lora_alpha", "32"],
    "full_zero2": ["--train_type", "full", "--deepspeed", "zero2"],
}


def build_model(folder: Path) -> dict:
    """The random bf16 model saved with the tiny tokenizer; returns its shape and matrix-product parameters."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhfx.registry.tiny import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    config = LlamaConfig(**LLAMA_3_2_1B, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    shape = {"parameters": sum(p.numel() for p in model.parameters()), "matmul_parameters": matmul,
             "layers": config.num_hidden_layers, "hidden": config.hidden_size}
    del model
    torch.cuda.empty_cache()
    return shape


def write_data(folder: Path, rows: int, prompt_words: int, response_words: int) -> int:
    """Preference rows of single-token words, all of one templated length; returns that length in tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = [t[1:] for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()]
    words = [w for w in vocab if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]
    rng = random.Random(0)

    def text(first: str, count: int) -> str:
        return first + "".join(" " + rng.choice(words) for _ in range(count))

    records = [{"prompt": text("Describe", prompt_words), "chosen": text("The", response_words),
                "rejected": text("The", response_words)} for _ in range(rows)]
    lengths = {len(tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                                  {"role": "assistant", "content": r[side]}])["input_ids"])
               for r in records for side in ("chosen", "rejected")}
    if len(lengths) != 1:
        raise RuntimeError(f"rows differ in length ({sorted(lengths)}): batches would be padded")
    (folder / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return lengths.pop()


def step_seconds(metrics: Path, warmup: int) -> tuple[float, int]:
    """Mean seconds per optimizer step after `warmup` steps, from the times of the per-step log events."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    timed = [(r["step"], r["time"]) for r in rows if "loss" in r and r["step"] >= warmup]
    (first_step, first_time), (last_step, last_time) = timed[0], timed[-1]
    return (last_time - first_time) / (last_step - first_step), last_step - first_step


def run_mode(name: str, extra: list[str], work: Path, opts, seq_len: int, shape: dict, peak: float | None) -> dict:
    out = work / f"out-{name}"
    peak_file = work / f"peak-{name}"
    cmd = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "dpo", "--model", str(work / "model"),
           "--template", "chatml", "--dataset", str(work / "model" / "pref.jsonl"), "--max_length", str(seq_len),
           "--batch_size", str(opts.batch_size), "--max_steps", str(opts.steps), "--logging_steps", "1",
           "--save_steps", "-1", "--bf16", "true", "--output_dir", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks" / "gpu_probe"), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]),
           "RLHFX_PEAK_MEMORY_FILE": str(peak_file)}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], flush=True)
        return {"error": (done.stderr or done.stdout)[-1500:], "wall_seconds": wall}
    seconds, timed_steps = step_seconds(out / "metrics.jsonl", opts.warmup)
    tokens = opts.batch_size * 2 * seq_len
    n, attention = shape["matmul_parameters"], shape["layers"] * shape["hidden"] * seq_len
    policy = (4 if "lora" in name else 6) * n + 12 * attention
    reference = 0 if "precompute" in name else 2 * n + 4 * attention
    flops = tokens * (policy + reference)
    result = {"step_seconds": seconds, "timed_steps": timed_steps, "tokens_per_second": tokens / seconds,
              "model_tflops_per_second": flops / seconds / 1e12,
              "mfu": flops / seconds / peak if peak else None,
              "peak_gpu_memory_gb": int(peak_file.read_text()) / 2**30 if peak_file.exists() else None,
              "wall_seconds": wall}
    shutil.rmtree(out, ignore_errors=True)
    print(f"{name}: {seconds * 1000:.0f} ms/step, {result['tokens_per_second']:.0f} tokens/s, "
          f"MFU {result['mfu'] or 0:.1%}, peak {result['peak_gpu_memory_gb'] or 0:.1f} GB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--prompt_words", type=int, default=400)
    parser.add_argument("--response_words", type=int, default=600)
    parser.add_argument("--work", default="/tmp/rlhfx-gpu-dpo")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_dpo.json"))
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    if not torch.cuda.is_available():
        sys.exit("gpu_dpo.py needs a CUDA GPU.")
    gpu = torch.cuda.get_device_name()
    peak = next((rate for key, rate in PEAK_BF16_FLOPS.items() if key in gpu), None)
    work = Path(opts.work)
    shutil.rmtree(work, ignore_errors=True)
    shape = build_model(work / "model")
    seq_len = write_data(work / "model", opts.batch_size * (opts.steps + 1), opts.prompt_words, opts.response_words)
    print(f"{gpu}: {shape['parameters'] / 1e9:.2f}B parameters, sequences of {seq_len} tokens", flush=True)
    results = {}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    for mode in opts.modes.split(","):
        results[mode] = run_mode(mode, MODES[mode], work, opts, seq_len, shape, peak)
        Path(opts.out).write_text(json.dumps({  # after every mode: a run cut short keeps what it measured
            "gpu": gpu, "peak_bf16_flops": peak, "torch": torch.__version__, "transformers": transformers.__version__,
            "model": {"shape": "Llama-3.2-1B (random weights)", **shape}, "sequence_tokens": seq_len,
            "pairs_per_step": opts.batch_size, "steps": opts.steps, "warmup_steps": opts.warmup,
            "attention": "sdpa, FlashAttention kernel only (gpu_probe/sitecustomize.py)", "results": results,
        }, indent=2) + "\n")
    print(f"written {opts.out}")


if __name__ == "__main__":
    main()
