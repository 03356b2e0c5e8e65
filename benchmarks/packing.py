"""Training throughput with and without --packing_samples on variable-length data (goal: >= 1.5x tokens/s).

The data is generated here: demo questions whose answers repeat a sentence 1 to 30 times (log-uniform),
so lengths range from about 20 to 350 tokens, as in real chat data. Each mode trains one epoch over the
same rows (tiny model, full, float32, CPU); tokens/s counts real (non-pad) tokens: the same total for both.
SFT packs whole samples into rows of --max_length (so its --batch_size counts packed rows: set here to
hold about as many real tokens per step as the padded batches); DPO flattens each micro batch into one
padding-free row, so its batch size is the same both ways. Modes alternate within each round; medians
are reported. Writes benchmarks/results/packing.json. Timings on a shared machine are noisy.
"""

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path

from measure import run_measured, write_result

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["The red fox is big.", "The quick brown fox jumps over the lazy dog.", "It is fast and brave."]


def variable_rows(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)

    def answer():
        return " ".join(rng.choice(SENTENCES) for _ in range(int(math.exp(rng.uniform(0, math.log(30))))))

    sft = [{"messages": [{"role": "user", "content": f"Tell me about animal {i}."},
                         {"role": "assistant", "content": answer()}]} for i in range(n)]
    pref = [{"prompt": f"Tell me about animal {i}.", "chosen": answer(), "rejected": answer()} for i in range(n)]
    return sft, pref


def real_tokens(algo: str, rows: list[dict]) -> int:
    from transformers import AutoTokenizer

    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template

    encoder = ChatEncoder(AutoTokenizer.from_pretrained(tiny_model_path()), get_template("chatml"))
    if algo == "sft":
        return sum(len(encoder.encode_sft(r["messages"])["input_ids"]) for r in rows)
    total = 0
    for r in rows:
        prompt = [{"role": "user", "content": r["prompt"]}]
        total += sum(len(encoder.encode_completion(prompt, r[k])) for k in ("chosen", "rejected"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--packed_sft_batch_size", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "packing.json"))
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sft_rows, pref_rows = variable_rows(opts.rows)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for algo, rows in (("sft", sft_rows), ("dpo", pref_rows)):
            data = work / f"{algo}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
            tokens = real_tokens(algo, rows)
            runs = {"padded": [], "packed": []}
            for round_ in range(opts.rounds):
                for mode in (("padded", "packed") if round_ % 2 == 0 else ("packed", "padded")):
                    out = work / f"{algo}-{mode}-{round_}"
                    batch = opts.packed_sft_batch_size if (algo, mode) == ("sft", "packed") else opts.batch_size
                    cmd = [sys.executable, "-m", "rlhfx", *(["sft"] if algo == "sft" else ["rlhf", "--rlhf_type", "dpo"]),
                           "--model", "tiny", "--dataset", str(data), "--train_type", "full", "--num_train_epochs", "1",
                           "--batch_size", str(batch), "--learning_rate", "1e-5", "--save_steps", "-1",
                           "--packing_samples", str(mode == "packed").lower(), "--output_dir", str(out)]
                    run_measured(cmd, env={"OMP_NUM_THREADS": "1"}, log=str(out) + ".log")
                    seconds = json.loads((out / "summary.json").read_text())["train_seconds"]
                    runs[mode].append(tokens / seconds)
                    print(f"{algo} {mode}: {tokens / seconds:.0f} tokens/s", flush=True)
            med = {mode: statistics.median(v) for mode, v in runs.items()}
            results[algo] = {"tokens_per_second": med, "speedup": med["packed"] / med["padded"], "runs": runs,
                             "real_tokens": tokens, "rows": opts.rows,
                             "batch_size": {"padded": opts.batch_size,
                                            "packed": opts.packed_sft_batch_size if algo == "sft" else opts.batch_size}}
            print(f"{algo}: packing speedup {results[algo]['speedup']:.2f}x (goal >= 1.5x)", flush=True)
    write_result(opts.out, {
        "goal": "speedup >= 1.5x", "results": results, "rounds": opts.rounds,
        "model": "tiny (embedded), full, float32, CPU",
    })


if __name__ == "__main__":
    main()
