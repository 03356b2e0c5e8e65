"""A PNG of the training curves (loss, and reward metrics when the algorithm logs them)."""

import json
from pathlib import Path

PANELS = [("loss", ["loss", "eval_loss"]), ("rewards", ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
          ("accuracy", ["rewards/accuracies", "eval_rewards/accuracies"]),
          ("sft / dpo loss", ["sft_loss", "dpo_loss", "eval_sft_loss", "eval_dpo_loss"]),
          ("reward", ["reward", "eval_reward"]), ("kl", ["kl", "kl_coef"]), ("rl losses", ["policy_loss", "value_loss"])]


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a last line that a killed run left half-written is dropped."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        last = [json.loads(lines[-1])] if lines else []
    except json.JSONDecodeError:
        last = []
    return [json.loads(line) for line in lines[:-1]] + last


def plot_curves(metrics_path: Path, out_path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    panels = [(name, [k for k in keys if any(k in r for r in rows)]) for name, keys in PANELS]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            style = "o-" if key.startswith("eval_") else "-"
            ax.plot(*zip(*points), style, label=key, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def trajectory_points(rows: list[dict], sft_key: str, dpo_key: str) -> list[tuple[float, float]]:
    """(SFT loss, DPO loss) after every row that logs either, the other carried forward once it is known."""
    points, current = [], {sft_key: None, dpo_key: None}
    for row in rows:
        if sft_key in row or dpo_key in row:
            current.update({k: row[k] for k in (sft_key, dpo_key) if k in row})
            if None not in current.values():
                points.append((current[sft_key], current[dpo_key]))
    return points


def plot_trajectories(runs: dict[str, list[tuple[float, float]]], out_path: Path, title: str,
                      ideal: tuple[float, float] | None = (0.0, 0.0), train_runs: dict | None = None) -> Path | None:
    """One line per run in the (SFT loss, DPO loss) plane, start and end marked, with the ideal point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: points for name, points in runs.items() if points}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, points in (train_runs or {}).items():
        if points:
            ax.plot(*zip(*points), "-", alpha=0.25, linewidth=1, label=f"{name} (train batches)")
    for name, points in runs.items():
        line, = ax.plot(*zip(*points), "o-", markersize=3, label=name)
        ax.plot(*points[0], "s", color=line.get_color(), markersize=7, markerfacecolor="none")
        ax.plot(*points[-1], "*", color=line.get_color(), markersize=12)
    if ideal is not None:
        ax.plot(*ideal, "kx", markersize=10, markeredgewidth=2, label=f"ideal ({ideal[0]:.3g}, {ideal[1]:.3g})")
    ax.set_xlabel("SFT loss (token-mean NLL)")
    ax.set_ylabel("DPO loss")
    ax.set_title(title + "\n(square: start, star: end)", fontsize=10)
    return save_figure(fig, ax, out_path)


def save_figure(fig, ax, path: Path) -> Path:
    """Grid and legend on `ax`, then the figure as a PNG (and closed, so loops of plots do not pile up)."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_trajectory(metrics_path: Path, out_path: Path, title: str,
                    ideal: tuple[float, float] | None = (0.0, 0.0)) -> Path | None:
    """A joint SFT + DPO run's trajectory: held-out losses at each evaluation, and the training batches' losses."""
    rows = read_metrics(metrics_path)
    held_out = trajectory_points(rows, "eval_sft_loss", "eval_loss")
    train = trajectory_points(rows, "sft_loss", "dpo_loss")
    return plot_trajectories({"held-out": held_out}, out_path, title, ideal, {"run": train})
