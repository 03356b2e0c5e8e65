"""Online RL throughput: rlhfx GRPO vs TRL's GRPOTrainer, same model, prompts and settings, in one run.

Both train `--steps` steps of GRPO on the demo prompts (rendered with ChatML, the same text for both),
each step `--prompts` prompts x `--n` samples of up to `--max_new_tokens` tokens at temperature 1, one
optimizer step on all samples (batch = prompts x n), KL coefficient 0.04 (TRL's `beta`, so both keep a
reference model), reward: the demo task's rule reward, full fine-tuning, CPU float32 on `--threads` threads.
samples/s = steps x prompts x n / the seconds of the training loop (model loading and evaluation excluded:
rlhfx's `train_seconds` in summary.json, TRL's `trainer.train()`). Mean response lengths are recorded too,
since a policy that stops earlier generates faster. Writes benchmarks/results/rl_throughput.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rl_throughput.json"


def rlhfx_grpo(model: str, args, out: Path) -> dict:
    command = [sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "grpo", "--model", model, "--dataset", "demo-prompts",
               "--reward_func", "demo", "--train_type", "full", "--learning_rate", "1e-5", "--lr_scheduler_type",
               "constant", "--max_steps", str(args.steps), "--rollout_batch_size", str(args.prompts),
               "--n_samples_per_prompt", str(args.n), "--batch_size", str(args.prompts * args.n),
               "--micro_rollout_batch_size", str(args.prompts * args.n), "--generate_max_len", str(args.max_new_tokens),
               "--kl_coef", "0.04", "--logging_steps", "1", "--save_steps", "-1", "--seed", "42", "--output_dir", str(out)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lengths = [r["response_length"] for r in rows if "response_length" in r]
    samples = args.steps * args.prompts * args.n
    return {"seconds": summary["train_seconds"], "samples_per_second": samples / summary["train_seconds"],
            "mean_response_length": sum(lengths) / len(lengths)}


def trl_grpo(model: str, args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhfx.data.loader import DataConfig, load_data
    from rlhfx.registry.demo_task import reward
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_causal_lm, load_tokenizer, resolve_model_path

    torch.set_num_threads(args.threads)
    path = resolve_model_path(model, None)
    tokenizer = load_tokenizer(path)
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    rows, _, _ = load_data(DataConfig(datasets=["demo-prompts"], kind="prompt", seed=42))
    data = Dataset.from_list([{"prompt": encoder.prompt_text(r["prompt"]), "label": r["label"]} for r in rows])

    def demo_reward(prompts, completions, label, **kwargs):
        return [reward(c, l) for c, l in zip(completions, label)]

    batch = args.prompts * args.n
    config = GRPOConfig(output_dir=str(out), per_device_train_batch_size=batch, generation_batch_size=batch,
                        num_generations=args.n, max_completion_length=args.max_new_tokens, beta=0.04,
                        learning_rate=1e-5, lr_scheduler_type="constant", max_steps=args.steps, logging_steps=1,
                        save_strategy="no", report_to=[], use_cpu=True, bf16=False, seed=42, disable_tqdm=True,
                        temperature=1.0)
    trainer = GRPOTrainer(model=load_causal_lm(path, "float32"), reward_funcs=demo_reward, args=config,
                          train_dataset=data, processing_class=tokenizer)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "completions/mean_length" in r]
    return {"seconds": seconds, "samples_per_second": args.steps * batch / seconds,
            "mean_response_length": sum(lengths) / len(lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the embedded model) or a folder, e.g. an SFT run")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = rlhfx_grpo(args.model, args, Path(tmp) / "rlhfx")
        theirs = trl_grpo(args.model, args, Path(tmp) / "trl")
    import torch
    import trl

    result = {"settings": vars(args), "rlhfx_grpo": ours, "trl_grpo": theirs,
              "speedup": ours["samples_per_second"] / theirs["samples_per_second"],
              "versions": {"torch": torch.__version__, "trl": trl.__version__},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "note": "measured on a CPU shared with other jobs; compare within one run only"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
