"""Online RL rollout engines on one machine: pt (the policy generates), vLLM colocated (--vllm_mode colocate) and
vLLM as a separate `rlhfx rollout` server (--vllm_mode server), same GRPO run otherwise.

Run it with .venv-vllm's python (colocate and the server need vLLM). Each mode trains `--steps` GRPO steps on the
demo prompts: `--prompts` prompts x `--n` samples of up to `--max_new_tokens` tokens, one optimizer step per
rollout, full fine-tuning, CPU float32. samples/s = steps x prompts x n / the training loop's seconds
(summary.json's train_seconds: model loading, server start and evaluation excluded); step time = train_seconds /
steps. Server mode's steps include pushing every weight over HTTP and the greedy check of each push. On a CPU
the server competes with the trainer for the same cores, so server mode shows its cost here, not its gain (the gain
is generation on other GPUs while these train). Writes benchmarks/results/rl_vllm_modes.json.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from measure import write_result

RESULTS = Path(__file__).parent / "results" / "rl_vllm_modes.json"


def grpo(model: str, args, out: Path, mode: list[str]) -> dict:
    command = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "grpo", "--model", model, "--dataset", "demo-prompts",
               "--val_dataset", "demo-prompts#4", "--reward_func", "demo", "--train_type", "full", "--learning_rate",
               "1e-5", "--lr_scheduler_type", "constant", "--max_steps", str(args.steps), "--rollout_batch_size",
               str(args.prompts), "--n_samples_per_prompt", str(args.n), "--batch_size", str(args.prompts * args.n),
               "--micro_rollout_batch_size", str(args.prompts * args.n), "--generate_max_len", str(args.max_new_tokens),
               "--save_steps", "-1", "--seed", "42", "--output_dir", str(out), *mode]
    subprocess.run(command, check=True, capture_output=True)
    seconds = json.loads((out / "summary.json").read_text())["train_seconds"]
    return {"train_seconds": round(seconds, 2), "step_seconds": round(seconds / args.steps, 3),
            "samples_per_second": round(args.steps * args.prompts * args.n / seconds, 2)}


def serve(model: str, log: Path):
    """`rlhfx rollout` on a free port, once it answers /health: (process, port, seconds it took to start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, "-m", "rlhfx", "rollout", "--model", model, "--port", str(port)],
                                  stdout=sink, stderr=subprocess.STDOUT)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            return server, port, time.time() - start
        except OSError:
            if server.poll() is not None or time.time() - start > 600:
                raise RuntimeError(f"rlhfx rollout did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the embedded model) or a folder, e.g. an SFT run")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["pt"] = grpo(args.model, args, tmp / "pt", [])
        results["vllm_colocate"] = grpo(args.model, args, tmp / "colocate", ["--use_vllm", "true", "--vllm_mode", "colocate"])
        server, port, started = serve(args.model, tmp / "server.log")
        try:
            results["vllm_server"] = grpo(args.model, args, tmp / "server", [
                "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1",
                "--vllm_server_port", str(port)])
        finally:
            server.terminate()
            server.wait(timeout=60)
        results["vllm_server"]["server_start_seconds"] = round(started, 1)
    write_result(str(RESULTS), {"settings": vars(args), "modes": results})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
