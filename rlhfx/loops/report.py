"""A loop's results, read back from the files its stages wrote: a table, summary.json (written last: a loop
folder without it is not finished) and rewards.png (mean and best-of-K reward per iteration)."""

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlhfx.sampling.jsonl import read_jsonl
from rlhfx.sampling.postprocess import reward_stats
from rlhfx.training.outputs import write_json_atomic


def iteration_row(spec, folder: Path, iteration: int) -> dict:
    row = {"iteration": iteration, "policy": f"pi_{iteration}", **reward_stats(read_jsonl(folder / "scored.jsonl")),
           "train_rows": len(read_jsonl(folder / spec.data_file))}
    run = json.loads((folder / "model" / "summary.json").read_text())
    return {**row, "train_loss": run["train_loss"], "train_steps": run["global_step"],
            "train_seconds": run["train_seconds"]}


def write_report(spec, out: Path, iterations: int, state) -> dict:
    rows = [iteration_row(spec, out / f"iter_{i}", i) for i in range(iterations)]
    final = {"iteration": "final", "policy": f"pi_{iterations}", **reward_stats(read_jsonl(out / "final" / "scored.jsonl"))}
    summary = {"loop": spec.name, "iterations": rows, "final": final,
               "mean_reward_gain": final["mean_reward"] - rows[0]["mean_reward"],
               "best_of_n_reward_gain": final["best_of_n_reward"] - rows[0]["best_of_n_reward"],
               "stage_seconds": state.seconds, "plot": str(plot_rewards(rows + [final], out / "rewards.png", spec.name))}
    print_table(spec, rows, final, out)
    write_json_atomic(out / "summary.json", summary)
    return summary


def print_table(spec, rows: list[dict], final: dict, out: Path) -> None:
    train_rows = {"rs": "best answers", "iterative_dpo": "pairs", "csft": "SFT rows"}[spec.name]
    table = Table(title=f"rlhfx pipeline {spec.name}: reward of each policy's samples", title_justify="left",
                  caption="* the final policy, on the first iteration's prompts", caption_justify="left")
    for column in ("policy", "prompts", "samples", "mean", "best-of-K", train_rows, "train loss", "steps"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in rows + [final]:
        training = [str(row["train_rows"]), f"{row['train_loss']:.4f}", str(row["train_steps"])] if "train_rows" in row \
            else ["", "", ""]
        table.add_row(row["policy"] + ("*" if row is final else ""), str(row["prompts"]),
                      str(row["samples"]), f"{row['mean_reward']:.4f}", f"{row['best_of_n_reward']:.4f}", *training)
    console = Console()
    console.print(table)
    console.print(f"outputs in {out} (summary.json, rewards.png, iter_*/, final/)", highlight=False)


def plot_rewards(rows: list[dict], path: Path, loop: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhfx.training.plot import save_figure

    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(xs, [r["mean_reward"] for r in rows], "o-", label="mean reward")
    ax.plot(xs, [r["best_of_n_reward"] for r in rows], "s--", label="best-of-K reward")
    ax.set_xticks(xs, [r["policy"] for r in rows])
    ax.set_xlabel("policy (samples of pi_i in iteration i; the last on the first iteration's prompts)")
    ax.set_ylabel("reward")
    ax.set_title(f"rlhfx pipeline {loop}")
    return save_figure(fig, ax, path)
