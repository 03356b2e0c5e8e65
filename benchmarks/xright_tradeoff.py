"""SFT / DPO trade-off on the tiny model: sequential vs mix vs ALRIGHT vs MAXRIGHT at the same step budget.

    python benchmarks/xright_tradeoff.py            # a few minutes on an idle 2-core CPU
    python benchmarks/xright_tradeoff.py --steps 80 # quicker, noisier

Setup (all through the `rlhfx` CLI, full fine-tuning, batch 8, one learning rate, cosine schedule):
- start W: the tiny model after a short SFT (`--warm_steps`) on demo-sft, so it knows the chat format
  but neither objective is done. Every method starts from W; the DPO reference is W for the joint
  methods (the default frozen copy of --model) and, as `rlhfx rlhf --rlhf_type dpo` does by default,
  the stage-1 output for the sequential baseline's DPO stage.
- ideal point (sft_opt, dpo_opt): the held-out losses reached by SFT alone and DPO alone in the full
  budget from W (the single-objective optima at this budget). MAXRIGHT is given them as
  --sft_opt / --dpo_opt.
- sequential: `rlhfx sft` for half the budget, then `rlhfx rlhf --rlhf_type dpo` for the other half.
  mix, alright, maxright: `--lambd` (default 0.5), the whole budget.
- every checkpoint (every budget/8 steps) is evaluated with one evaluator: held-out token-mean SFT
  NLL on demo-sft's validation set and held-out DPO loss / accuracy on demo-pref's validation set,
  always against reference W, so every method is scored on the same two objectives.
- time is each run's training time from summary.json, wall and CPU (the sequential one is the sum
  of its two stages, checkpoint saving included for all). Every run uses one compute thread
  (OMP_NUM_THREADS=1) so that, on a CPU shared with other work, its CPU time still measures its own
  work; wall-clock ratios are only meaningful on an otherwise idle machine.

Writes benchmarks/results/xright_tradeoff.json and .png (trajectories in the (SFT loss, DPO loss) plane).
"""

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def rlhfx(*argv) -> None:
    print("$ rlhfx " + " ".join(map(str, argv)), flush=True)
    # one process with one compute thread: on a shared CPU its CPU time then measures the work done
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC_PER_NODE", "NNODES")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "rlhfx", *map(str, argv)], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(result.stdout[-3000:] + result.stderr[-3000:])


def train_seconds(out: Path, key: str = "train_seconds") -> float:
    return json.loads((out / "summary.json").read_text())[key]


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = [(int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if p.is_dir()]
    return sorted(found)


class Evaluator:
    """Held-out SFT loss and DPO loss/accuracy of any model, against one fixed reference (W)."""

    def __init__(self, reference: Path, work: Path, beta: float):
        from rlhfx.data.loader import DataConfig, load_data
        from rlhfx.registry.models import resolve_model_type
        from rlhfx.training.encode import encode_rows
        from rlhfx.models import load_causal_lm, load_tokenizer
        from rlhfx.templates.encoder import ChatEncoder
        from rlhfx.templates.templates import get_template

        self.tokenizer = load_tokenizer(str(reference))
        self.reference = load_causal_lm(str(reference), "float32")
        self.load, self.work, self.beta = load_causal_lm, work, beta
        template = get_template(resolve_model_type("tiny", "tiny", None).template)
        encoder = ChatEncoder(self.tokenizer, template)
        encoded = {}
        for name, kind in (("demo-sft", "sft"), ("demo-pref", "pairwise")):
            _, val, report = load_data(DataConfig(datasets=[name], kind=kind))
            encoded[kind] = encode_rows(kind, val, encoder, 512, report, "val")
        self.sft_val, self.pref_val = encoded["sft"], encoded["pairwise"]

    def __call__(self, model_path: Path) -> dict:
        from transformers import PrinterCallback
        from trl import DPOConfig

        from rlhfx.algos.xright import XrightTrainer

        config = DPOConfig(output_dir=str(self.work / "eval"), use_cpu=True, report_to=[], bf16=False,
                           per_device_eval_batch_size=50, beta=self.beta, precompute_ref_log_probs=False,
                           disable_tqdm=True)
        trainer = XrightTrainer(
            model=self.load(str(model_path), "float32"), ref_model=copy.deepcopy(self.reference), args=config,
            train_dataset=self.pref_val, eval_dataset=self.pref_val, processing_class=self.tokenizer,
            rlhfx_loss={"beta": self.beta, "loss_type": "sigmoid", "label_smoothing": 0.0, "rpo_alpha": 0.0},
            mode="mix", sft_train_dataset=self.sft_val, sft_eval_dataset=self.sft_val)
        trainer.remove_callback(PrinterCallback)
        metrics = trainer.evaluate()
        return {"sft_loss": metrics["eval_sft_loss"], "dpo_loss": metrics["eval_loss"],
                "dpo_accuracy": metrics["eval_rewards/accuracies"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="step budget of every method")
    parser.add_argument("--warm_steps", type=int, default=40, help="SFT steps that make the common start W")
    parser.add_argument("--lambd", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_eval_steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "xright_tradeoff")
    opts = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from rlhfx.training.plot import plot_trajectories

    work = opts.work or Path(tempfile.mkdtemp(prefix="xright-bench-"))
    if work.exists() and opts.work:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    n, half, every = opts.steps, opts.steps // 2, max(1, opts.steps // 8)
    common = ["--train_type", "full", "--batch_size", opts.batch_size, "--learning_rate", opts.learning_rate,
              "--seed", opts.seed, "--logging_steps", every, "--save_steps", every, "--save_total_limit", 100]
    started = time.time()

    warm = work / "W"
    rlhfx("sft", "--model", "tiny", "--dataset", "demo-sft", "--train_type", "full", "--max_steps", opts.warm_steps,
          "--batch_size", 16, "--learning_rate", "3e-3", "--seed", opts.seed, "--output_dir", warm)
    pref = ["--dataset", "demo-pref", "--beta", opts.beta]
    joint = [*pref, "--sft_dataset", "demo-sft", "--lambd", opts.lambd]

    # single-objective runs: the ideal point
    rlhfx("sft", "--model", warm, "--dataset", "demo-sft", "--max_steps", n, *common, "--output_dir", work / "sft_only")
    rlhfx("rlhf", "--rlhf_type", "dpo", "--model", warm, *pref, "--max_steps", n, *common, "--output_dir", work / "dpo_only")
    evaluate = Evaluator(warm, work, opts.beta)
    single = {"sft_only": evaluate(work / "sft_only"), "dpo_only": evaluate(work / "dpo_only")}
    sft_opt, dpo_opt = single["sft_only"]["sft_loss"], single["dpo_only"]["dpo_loss"]
    print(f"ideal point: sft_opt {sft_opt:.4f}, dpo_opt {dpo_opt:.4f}", flush=True)

    # the four methods
    rlhfx("sft", "--model", warm, "--dataset", "demo-sft", "--max_steps", half, *common, "--output_dir", work / "seq_sft")
    rlhfx("rlhf", "--rlhf_type", "dpo", "--model", work / "seq_sft", *pref, "--max_steps", n - half, *common,
          "--output_dir", work / "seq_dpo")
    for mode in ("mix", "alright", "maxright"):
        extra = ["--sft_opt", sft_opt, "--dpo_opt", dpo_opt, "--max_eval_steps", opts.max_eval_steps] if mode == "maxright" else []
        rlhfx("rlhf", "--rlhf_type", mode, "--model", warm, *joint, "--max_steps", n, *common, *extra,
              "--output_dir", work / mode)

    start = evaluate(warm)
    stages = {"sequential": [(0, work / "seq_sft"), (half, work / "seq_dpo")],
              **{mode: [(0, work / mode)] for mode in ("mix", "alright", "maxright")}}
    methods = {}
    for name, runs in stages.items():
        trajectory = [{"step": 0, **start}]
        for offset, out in runs:
            for step, path in checkpoints(out):
                trajectory.append({"step": offset + step, **evaluate(path)})
        final = trajectory[-1]
        methods[name] = {
            "eval_sft_loss": final["sft_loss"], "eval_dpo_loss": final["dpo_loss"],
            "eval_dpo_accuracy": final["dpo_accuracy"],
            "distance_to_ideal": math.hypot(final["sft_loss"] - sft_opt, final["dpo_loss"] - dpo_opt),
            "train_seconds": sum(train_seconds(out) for _, out in runs),
            "train_cpu_seconds": sum(train_seconds(out, "train_cpu_seconds") for _, out in runs),
            "trajectory": trajectory}
        if name in ("mix", "alright", "maxright"):
            record = json.loads((work / name / "objectives.json").read_text())
            if name != "mix":
                methods[name]["dpo_step_share"] = sum(record["objectives"]) / len(record["objectives"])
    base, cpu_base = methods["sequential"]["train_seconds"], methods["sequential"]["train_cpu_seconds"]
    for m in methods.values():
        m["wall_time_ratio_vs_sequential"] = m["train_seconds"] / base
        m["cpu_time_ratio_vs_sequential"] = m["train_cpu_seconds"] / cpu_base

    result = {
        "setup": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k not in ("work", "out")},
                  "model": "tiny (embedded)", "start": f"tiny after {opts.warm_steps} SFT steps on demo-sft (W)",
                  "eval": "demo-sft val (200 rows) SFT NLL; demo-pref val (200 pairs) DPO loss/accuracy vs reference W",
                  "benchmark_seconds": round(time.time() - started, 1)},
        "start": start, "ideal": {"sft_opt": sft_opt, "dpo_opt": dpo_opt},
        "single_objective": single,
        "methods": methods,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot_trajectories({name: [(p["sft_loss"], p["dpo_loss"]) for p in m["trajectory"]] for name, m in methods.items()},
                      opts.out.with_suffix(".png"), f"tiny model, {n} steps, lambd {opts.lambd}: held-out losses",
                      ideal=(sft_opt, dpo_opt))
    print(f"\n{'method':<11} {'SFT loss':>9} {'DPO loss':>9} {'DPO acc':>8} {'dist':>7} {'wall x':>7} {'cpu x':>7}")
    for name, m in methods.items():
        print(f"{name:<11} {m['eval_sft_loss']:9.4f} {m['eval_dpo_loss']:9.4f} {m['eval_dpo_accuracy']:8.3f} "
              f"{m['distance_to_ideal']:7.4f} {m['wall_time_ratio_vs_sequential']:7.2f} "
              f"{m['cpu_time_ratio_vs_sequential']:7.2f}")
    print(f"ideal       {sft_opt:9.4f} {dpo_opt:9.4f}\nwrote {opts.out.with_suffix('.json')} and .png")
    if not opts.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
