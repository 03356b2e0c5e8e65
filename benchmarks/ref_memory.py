"""Peak memory of full DPO with a live reference model versus --precompute_ref_log_probs.

A live reference is a second full copy of the weights for the whole run; with precomputed log-probs the
starting policy scores every pair once before training and no copy is kept. The model is a randomly
initialised Llama of about 25M parameters (100 MB in float32, built here with the tiny model's tokenizer),
big enough for one weight copy to show in the peak RSS next to the Python, torch and optimizer baseline.
Modes alternate within each round; medians reported. Writes benchmarks/results/ref_memory.json.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from measure import run_measured, write_result

ROOT = Path(__file__).resolve().parent.parent


def build_model(folder: Path) -> int:
    """A random 8-layer Llama (hidden 512) saved with the tiny tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhfx.registry.tiny import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ref_memory.json"))
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from rlhfx.registry.demo_task import DATA_DIR

    runs = {"live_reference": [], "precomputed": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = build_model(work / "model")
        data = work / "pref.jsonl"
        data.write_text("".join((DATA_DIR / "demo_pref_train.jsonl").read_text().splitlines(True)[:64]))
        for round_ in range(opts.rounds):
            for mode in (("live_reference", "precomputed") if round_ % 2 == 0 else ("precomputed", "live_reference")):
                out = work / f"{mode}-{round_}"
                cmd = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "dpo", "--model", str(work / "model"),
                       "--template", "chatml", "--dataset", str(data), "--train_type", "full", "--max_steps",
                       str(opts.steps), "--batch_size", "8", "--save_steps", "100000", "--output_dir", str(out),
                       "--precompute_ref_log_probs", str(mode == "precomputed").lower()]
                measured = run_measured(cmd, env={"OMP_NUM_THREADS": "1"}, log=str(out) + ".log")
                runs[mode].append(measured["peak_rss_mb"])
                shutil.rmtree(out, ignore_errors=True)
                print(f"{mode}: peak RSS {measured['peak_rss_mb']:.0f} MB", flush=True)
    med = {mode: statistics.median(v) for mode, v in runs.items()}
    saved = med["live_reference"] - med["precomputed"]
    print(f"precompute saves {saved:.0f} MB of peak RSS (one float32 weight copy: {params * 4 / 2**20:.0f} MB)")
    write_result(opts.out, {
        "peak_rss_mb": med, "saved_mb": saved, "weights_copy_mb": params * 4 / 2**20, "parameters": params,
        "runs": runs, "rounds": opts.rounds, "steps": opts.steps,
        "model": "random Llama, 8 layers, hidden 512, full DPO, float32, CPU",
    })


if __name__ == "__main__":
    main()
