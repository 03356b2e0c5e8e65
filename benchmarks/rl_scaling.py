"""Online RL scaling: GRPO samples/s and step time at 1 and 2 processes (NPROC_PER_NODE), one engine at a time.

Each configuration runs `rlhfx rlhf --rlhf_type grpo` for `--steps` steps of `--prompts` prompts x `--n` samples
(the same global batch at every process count: each rank rolls out prompts / processes of them, and its optimizer
batch is its share of the samples). samples/s = the steps' samples / the training loop's seconds (summary.json's
train_seconds: model loading and evaluation excluded); step time = its inverse per step. The median of the logged
per-step samples_per_second is recorded too, and the load average as each run starts (other jobs' share). On the
CPU each process gets `--threads` threads (OMP_NUM_THREADS).

Engines (ENGINE_FLAGS): pt (the policy generates), vllm_colocate (an in-process vLLM engine per rank) and
vllm_server (every rank talks to one `rlhfx rollout` server, started here before its runs and stopped after, with
rl_vllm_modes.serve; its steps include pushing the weights). Run it with .venv-vllm's python for the vLLM engines.
A configuration that fails records the tail of its log as "error" instead of numbers.
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

from rl_vllm_modes import serve

RESULTS = Path(__file__).parent / "results" / "rl_scaling.json"
ENGINE_FLAGS = {
    "pt": [],
    "vllm_colocate": ["--use_vllm", "true", "--vllm_mode", "colocate"],
    "vllm_server": ["--use_vllm", "true", "--vllm_mode", "server"],
}


def run(model: str, engine: str, processes: int, opts, out: Path, server: list[str]) -> dict:
    command = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "grpo", "--model", model, "--dataset",
               "demo-prompts", "--reward_func", "demo", "--train_type", "full", "--learning_rate", "1e-5",
               "--lr_scheduler_type", "constant", "--max_steps", str(opts.steps), "--rollout_batch_size",
               str(opts.prompts), "--n_samples_per_prompt", str(opts.n),
               "--batch_size", str(opts.prompts * opts.n // processes), "--generate_max_len", str(opts.max_new_tokens),
               "--logging_steps", "1", "--seed", "42", "--save_steps", "-1", *ENGINE_FLAGS[engine], *server, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads)}
    if processes > 1:
        env["NPROC_PER_NODE"] = str(processes)
    load = os.getloadavg()[0]  # other jobs on the machine: the 1-minute load average as the run starts
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"engine": engine, "processes": processes, "error": (done.stdout + done.stderr)[-2000:],
                "load_average_at_start": load}
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
    parser.add_argument("--engines", nargs="+", default=list(ENGINE_FLAGS), choices=list(ENGINE_FLAGS))
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
            server, flags = None, []
            if engine == "vllm_server":
                server, port, _ = serve(opts.model, Path(tmp) / "server.log")
                flags = ["--vllm_server_host", "127.0.0.1", "--vllm_server_port", str(port)]
            try:
                for processes in opts.processes:
                    result = run(opts.model, engine, processes, opts, Path(tmp) / f"{engine}-{processes}", flags)
                    print(json.dumps(result), flush=True)
                    results.append(result)
            finally:
                if server:
                    server.terminate()
                    server.wait(timeout=60)
    settings = {k: v for k, v in vars(opts).items() if k not in ("out", "note")}
    record = {"settings": settings, "machine": platform.platform(), "cpus": os.cpu_count(), "note": opts.note,
              "results": results}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
