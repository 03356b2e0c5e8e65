"""Online RL scaling: GRPO samples/s and step time at 1 and 2 processes (NPROC_PER_NODE), one engine at a time.

Each configuration runs `rlhfx rlhf --rlhf_type grpo` for `--steps` steps of `--prompts` prompts x `--n` samples
(the same global batch at every process count: each rank rolls out prompts / processes of them, and its optimizer
batch is its share of the samples). samples/s = the steps' samples / the training loop's seconds (summary.json's
train_seconds: model loading and evaluation excluded); step time = its inverse per step. The median of the logged
per-step samples_per_second is recorded too, and the load average as each run starts (other jobs' share). On the
CPU each process gets `--threads` threads (OMP_NUM_THREADS).

`--engines pt` is measured here; `vllm_colocate` and `vllm_server` are the hooks for vLLM rollouts (ENGINE_FLAGS:
the flags that select them, and a server to start first for `server`), run the same way once those modes exist.
Writes benchmarks/results/rl_scaling.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rl_scaling.json"
ENGINE_FLAGS = {
    "pt": [],
    "vllm_colocate": ["--use_vllm", "true", "--vllm_mode", "colocate"],
    "vllm_server": ["--use_vllm", "true", "--vllm_mode", "server"],
}


def run(model: str, engine: str, processes: int, opts, out: Path) -> dict:
    command = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "grpo", "--model", model, "--dataset",
               "demo-prompts", "--reward_func", "demo", "--train_type", "full", "--learning_rate", "1e-5",
               "--lr_scheduler_type", "constant", "--max_steps", str(opts.steps), "--rollout_batch_size",
               str(opts.prompts), "--n_samples_per_prompt", str(opts.n),
               "--batch_size", str(opts.prompts * opts.n // processes), "--generate_max_len", str(opts.max_new_tokens),
               "--logging_steps", "1", "--seed", "42", "--save_steps", "-1", *ENGINE_FLAGS[engine], "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads)}
    if processes > 1:
        env["NPROC_PER_NODE"] = str(processes)
    load = os.getloadavg()[0]  # other jobs on the machine: the 1-minute load average as the run starts
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "samples_per_second" in r]
    samples = opts.steps * opts.prompts * opts.n
    seconds = summary["train_seconds"]
    return {"engine": engine, "processes": processes, "samples_per_second": samples / seconds,
            "step_seconds": seconds / opts.steps,
            "median_logged_samples_per_second": statistics.median(r["samples_per_second"] for r in steps),
            "mean_response_length": statistics.mean(r["response_length"] for r in steps),
            "final_reward": steps[-1]["reward"], "load_average_at_start": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the embedded model) or a folder, e.g. an SFT run")
    parser.add_argument("--engines", nargs="+", default=["pt"], choices=list(ENGINE_FLAGS))
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--note", default="CPU runs on a shared machine: compare configurations of one run only")
    opts = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in opts.engines:
            for processes in opts.processes:
                result = run(opts.model, engine, processes, opts, Path(tmp) / f"{engine}-{processes}")
                print(json.dumps(result), flush=True)
                results.append(result)
    settings = {k: v for k, v in vars(opts).items() if k not in ("out", "note")}
    record = {"settings": settings, "machine": platform.platform(), "cpus": os.cpu_count(), "note": opts.note,
              "results": results}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
