"""Post-processors that turn scored samples into training data (OpenRLHF `batch_inference --post_processor`).

Input rows are `{"input": rendered prompt text, "output": response, "reward": float}` plus, when rlhfx
generated them, `"prompt"`: the prompt as messages. Rows with the same `input` are samples of one
prompt (duplicate prompts in the data merge into one group). Ties go to the earliest row.

  rs        per distinct input, the highest-reward output -> SFT rows `{"messages", "input", "output", "reward"}`
  csft      every row, conditioned on its reward: `input = reward_template` with `{input}` and `{reward}`
            (two decimals, as OpenRLHF writes it) filled in; in `messages` the template is applied to the last user turn -> SFT rows
  iter_dpo  per distinct input, chosen = highest reward, rejected = lowest ->
            `{"prompt", "chosen", "chosen_reward", "rejected", "rejected_reward"}`; groups whose best and
            worst rewards are equal (also single-sample groups) are dropped and counted

The SFT rows load with `rlhfx sft --dataset FILE` and the pairs with `rlhfx rlhf --rlhf_type dpo --dataset FILE`.
"""

import math
import statistics
from dataclasses import dataclass, field

from rlhfx.errors import RlhfxError

POST_PROCESSORS = ("rs", "csft", "iter_dpo")
DEFAULT_REWARD_TEMPLATE = "{input} <rm_score>: {reward} "


@dataclass
class Processed:
    rows: list[dict]
    stats: dict = field(default_factory=dict)


def z_normalize(rewards: list[float]) -> list[float]:
    """(r - mean) / std with the sample standard deviation; all zeros when the rewards do not vary."""
    if len(rewards) < 2:
        return [0.0 for _ in rewards]
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
    return [0.0 if std == 0 else (r - mean) / std for r in rewards]


def reward_stats(rows: list[dict]) -> dict:
    """Mean reward, the mean over prompts of each prompt's best reward (best-of-n), and the counts."""
    best = [max(r["reward"] for r in group) for group in _groups(rows).values()]
    return {"mean_reward": statistics.fmean(r["reward"] for r in rows), "best_of_n_reward": statistics.fmean(best),
            "prompts": len(best), "samples": len(rows)}


def prompt_messages(row: dict) -> list[dict]:
    """The row's prompt as messages: its `prompt` when it has one, else its input text as one user turn."""
    prompt = row.get("prompt")
    if isinstance(prompt, list) and prompt:
        return [dict(m) for m in prompt]
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}]
    return [{"role": "user", "content": row["input"]}]


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["input"], []).append(row)
    return groups


def _sft_row(row: dict, messages: list[dict], input_text: str) -> dict:
    return {"messages": messages + [{"role": "assistant", "content": row["output"]}], "input": input_text,
            "output": row["output"], "reward": row["reward"]}


def rejection_sampling(rows: list[dict]) -> Processed:
    groups = _groups(rows)
    best = [max(group, key=lambda r: r["reward"]) for group in groups.values()]  # max keeps the first of ties
    out = [_sft_row(row, prompt_messages(row), row["input"]) for row in best]
    return Processed(out, {"rows_in": len(rows), "prompts": len(groups), "rows_out": len(out)})


def conditional_sft(rows: list[dict], reward_template: str = DEFAULT_REWARD_TEMPLATE) -> Processed:
    for key in ("{input}", "{reward}"):
        if key not in reward_template:
            raise RlhfxError(f"--reward_template {reward_template!r} has no {key}.",
                             f"write it like {DEFAULT_REWARD_TEMPLATE!r}.")

    def fill(text: str, reward: float) -> str:
        return reward_template.replace("{reward}", f"{reward:.2f}").replace("{input}", text)

    out = []
    for row in rows:
        messages = prompt_messages(row)
        messages[-1]["content"] = fill(messages[-1]["content"], row["reward"])
        out.append(_sft_row(row, messages, fill(row["input"], row["reward"])))
    return Processed(out, {"rows_in": len(rows), "rows_out": len(out)})


def iterative_dpo(rows: list[dict]) -> Processed:
    groups = _groups(rows)
    out, ties = [], 0
    for group in groups.values():
        chosen = max(group, key=lambda r: r["reward"])
        rejected = min(group, key=lambda r: r["reward"])
        if chosen["reward"] == rejected["reward"]:
            ties += 1
            continue
        out.append({"prompt": prompt_messages(chosen), "chosen": chosen["output"], "chosen_reward": chosen["reward"],
                    "rejected": rejected["output"], "rejected_reward": rejected["reward"]})
    return Processed(out, {"rows_in": len(rows), "prompts": len(groups), "pairs": len(out), "ties_dropped": ties})


def post_process(name: str, rows: list[dict], reward_template: str = DEFAULT_REWARD_TEMPLATE) -> Processed:
    missing = next((i for i, r in enumerate(rows) if not {"input", "output", "reward"} <= set(r)), None)
    if missing is not None:
        raise RlhfxError(f"Row {missing} has no {sorted({'input', 'output', 'reward'} - set(rows[missing]))[0]!r}; "
                         f"--post_processor {name} needs scored rows with input, output and reward.",
                         "score the samples first (--reward_model or --reward_func).")
    bad = next((i for i, r in enumerate(rows) if isinstance(r["reward"], bool)
                or not isinstance(r["reward"], (int, float)) or not math.isfinite(r["reward"])), None)
    if bad is not None:
        raise RlhfxError(f"Row {bad} has reward {rows[bad]['reward']!r}, not a finite number: --post_processor {name} "
                         "cannot rank it.", "score the samples again, or remove the rows without a usable reward.")
    if name == "rs":
        return rejection_sampling(rows)
    if name == "csft":
        return conditional_sft(rows, reward_template)
    if name == "iter_dpo":
        return iterative_dpo(rows)
    raise RlhfxError(f"Unknown --post_processor {name!r}.", f"use one of {', '.join(POST_PROCESSORS)}.")
