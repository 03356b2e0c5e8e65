"""The work of `rlhfx sample` as a library: generate best-of-n answers, score them, normalise, post-process, write.

Typed inputs, no argv: the `rlhfx sample` command and the loops (rlhfx.loops) both call these, each building the
inputs from its own parsed flags once. Row layout and outputs: see rlhfx.commands.sample.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from rlhfx.errors import RlhfxError

console = Console(stderr=True, markup=False)  # paths and templates may hold brackets
DEFAULT_BATCH_SIZE = 16  # prompts per generation call and samples per reward-model batch, without --batch_size


@dataclass(frozen=True)
class Rewards:
    """Where the rewards come from: a reward model folder or a reward function (`demo`, a .py file or a named reward
    of rlhfx.rewards.builtin, which reads `knobs`: rlhfx.algos.options.RewardOptions)."""

    reward_model: str | None
    reward_func: str | None
    reward_func_timeout: float | None
    torch_dtype: str
    use_chat_template: bool
    batch_size: int
    knobs: object = None

    @property
    def given(self) -> bool:
        return bool(self.reward_model or self.reward_func)

    def function(self):
        """--reward_func as a reward source: samples -> floats."""
        from rlhfx.rewards.builtin import NamedReward, is_named
        from rlhfx.rewards.sources import FunctionReward

        if is_named(self.reward_func):
            return NamedReward(self.reward_func, self.knobs)
        return FunctionReward(self.reward_func, self.reward_func_timeout)

    def check(self) -> None:
        """Before any model loads: one source, an existing folder, a reward function file that imports."""
        if self.reward_model and self.reward_func:
            raise RlhfxError("--reward_model and --reward_func both give rewards.", "choose one of them.")
        if self.reward_func:
            self.function()
        if self.reward_model and not Path(self.reward_model).is_dir():
            raise RlhfxError(f"--reward_model folder {self.reward_model} does not exist.",
                             "pass the output folder of `rlhfx rlhf --rlhf_type rm` or another one-label classifier.")


# --- generate -----------------------------------------------------------------------------------------------


def load_prompt_slice(data, iteration: int, size: int | None) -> tuple[list[dict], int]:
    """The prompts of `data` (a prompt-kind DataConfig) that iteration `iteration` takes, `size` per iteration
    (None: all), and the index of the first one."""
    from rlhfx.data.loader import load_data

    rows, _, report = load_data(data)
    for line in report.summary_lines():
        console.print(f"  data: {line}", highlight=False)
    size = size or len(rows)
    start = iteration * size
    if start >= len(rows):
        raise RlhfxError(f"--iter {iteration} x --rollout_batch_size {size} starts at prompt {start}, "
                         f"but the data has {len(rows)} prompts.", "use a smaller --iter or --rollout_batch_size.")
    return rows[start : start + size], start


def generate(spec, options, sampling, prompts: list[dict], first: int, batch_size: int) -> list[dict]:
    """`sampling.n` answers of the model `spec` (rlhfx.models.ModelSpec) to each prompt row, on the engine of
    `options` (rlhfx.engines.loading.EngineOptions): rows
    `{"input", "output", "prompt", "label", "index", "finished"}`."""
    from rlhfx.engines.loading import load_generator
    from rlhfx.engines.progress import generate_with_progress

    generator = load_generator(spec, options, batch_size)
    try:
        encoder = generator.encoder
        ids = [encoder.encode_prompt(row["prompt"]) for row in prompts]
        chunk = batch_size * 4 if options.engine == "pt" else 1024
        results, seconds = generate_with_progress(generator.engine, ids, sampling, chunk, "sample", console)
    finally:
        generator.engine.close()
    rows = []
    for offset, (row, completions) in enumerate(zip(prompts, results)):
        text = encoder.prompt_text(row["prompt"])
        for completion in completions:
            rows.append({"input": text, "output": completion.text, "prompt": row["prompt"], "label": row.get("label"),
                         "index": first + offset, "finished": completion.finished, "output_ids": completion.token_ids})
    console.print(f"rlhfx sample: {len(prompts)} prompts (#{first}-#{first + len(prompts) - 1}) x {sampling.n} = "
                  f"{len(rows)} samples in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.1f} samples/s, "
                  f"engine {options.engine}, model {spec.display})", highlight=False)
    return rows


def read_generated(datasets: list[str], max_samples: int | None = None) -> list[dict]:
    from rlhfx.sampling.jsonl import read_jsonl

    rows = []
    for spec in datasets:
        rows += read_jsonl(spec)
    missing = next((i for i, r in enumerate(rows) if not isinstance(r.get("input"), str)
                    or not isinstance(r.get("output"), str)), None)
    if missing is not None:
        raise RlhfxError(f"Row {missing} of {', '.join(datasets)} has no string 'input' and 'output'.",
                         "pass a file written by `rlhfx sample --task generate` (or OpenRLHF's generate stage).")
    return rows[:max_samples] if max_samples else rows


# --- rewards ------------------------------------------------------------------------------------------------


def score(rows: list[dict], rewards: Rewards) -> None:
    """Add `"reward"` to every row, from the reward function or the reward model."""
    start = time.time()
    if rewards.reward_func:
        values = rewards.function()([sample_of(row) for row in rows])
        source = f"reward function {rewards.reward_func}"
    else:
        values = score_with_reward_model(rewards, rows)
        source = f"reward model {rewards.reward_model}"
    for row, reward in zip(rows, values):
        row["reward"] = reward
    console.print(f"rlhfx sample: scored {len(rows)} samples with {source} in {time.time() - start:.1f} s; "
                  f"{reward_summary(rows)}", highlight=False)


def sample_of(row: dict):
    """A row as the reward sources take it (rlhfx.rewards.sources.Sample)."""
    from rlhfx.rewards.sources import Sample

    return Sample(row.get("prompt"), row["input"], row["output"], row.get("label"), row.get("output_ids"))


def score_with_reward_model(rewards: Rewards, rows: list[dict]) -> list[float]:
    """Each row's prompt + answer tokenized the way the reward model was trained (its run's template), scored
    at the last non-pad token."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlhfx.rewards.sources import RewardModelScorer

    scorer = RewardModelScorer(rewards.reward_model, rewards.torch_dtype, rewards.batch_size,
                               use_chat_template=rewards.use_chat_template)
    if scorer.pad_eos_note:
        console.print("note: the reward model's pad token is its EOS token (or missing); scores are read at the "
                      "last non-pad token, which may be before a final EOS.", highlight=False)
    samples = [sample_of(row) for row in rows]
    scores, start, chunk = [], time.time(), rewards.batch_size * 8
    columns = (TextColumn("[bold]score"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("score", total=len(samples), rate="")
        for first in range(0, len(samples), chunk):
            scores += scorer(samples[first : first + chunk])
            rate = len(scores) / max(time.time() - start, 1e-9)
            progress.update(task, completed=len(scores), rate=f"{rate:.1f} samples/s")
    return scores


def normalize_rewards(rows: list[dict]) -> None:
    """--normalize_reward: z-normalise the rewards over all rows."""
    from rlhfx.sampling.postprocess import z_normalize

    for row, z in zip(rows, z_normalize([row["reward"] for row in rows])):
        row["reward"] = z


def reward_summary(rows: list[dict]) -> str:
    """Mean reward and the mean over prompts of the best reward (best-of-n)."""
    from rlhfx.sampling.postprocess import reward_stats

    stats = reward_stats(rows)
    return (f"mean reward {stats['mean_reward']:.4f}, best-of-n mean {stats['best_of_n_reward']:.4f} over "
            f"{stats['prompts']} prompts")


# --- outputs ------------------------------------------------------------------------------------------------


def write(rows: list[dict], output: Path, post_processor: str | None, reward_template: str) -> None:
    """The rows as JSONL; with a post-processor its training rows, and the scored samples beside them as
    `<output>.samples.jsonl`."""
    from rlhfx.sampling.jsonl import write_jsonl_atomic

    if not post_processor:
        write_jsonl_atomic(output, rows)
        console.print(f"rlhfx sample: wrote {len(rows)} rows -> {output}", highlight=False)
        return
    from rlhfx.sampling.postprocess import post_process

    processed = post_process(post_processor, rows, reward_template)
    samples = output.with_name(output.stem + ".samples.jsonl")
    write_jsonl_atomic(samples, rows)
    write_jsonl_atomic(output, processed.rows)
    stats = processed.stats
    what = {"rs": "best answer per prompt (SFT rows)", "csft": "reward-conditioned SFT rows",
            "iter_dpo": "chosen/rejected pairs"}[post_processor]
    line = f"rlhfx sample: {post_processor}: {len(processed.rows)} {what} from {stats['rows_in']} samples"
    if post_processor == "rs":
        line += (f" of {stats['prompts']} prompts; skipped {stats['unfinished_skipped']} answers cut off at "
                 f"--max_new_tokens ({stats['prompts_without_finished']} prompts had no finished answer)")
    if post_processor == "iter_dpo":
        line += (f" of {stats['prompts']} prompts; dropped {stats['ties_dropped']} prompts whose best and worst "
                 "rewards tie")
    console.print(f"{line} -> {output} (scored samples: {samples})", highlight=False)
    if not processed.rows and post_processor == "rs":
        raise RlhfxError("--post_processor rs produced no rows: every answer was cut off at --max_new_tokens.",
                         "generate again with a higher --max_new_tokens.")
    if not processed.rows:
        raise RlhfxError(f"--post_processor {post_processor} produced no rows (every prompt's answers tie).",
                         "sample more answers per prompt (--best_of_n) or at a higher --temperature.")
