"""`rlhfx sample`: OpenRLHF's `batch_inference` stages for rejection sampling, conditional SFT and iterative DPO.

--task generate: best_of_n answers to each prompt of --dataset (iteration --iter takes prompts
    [iter * rollout_batch_size, (iter + 1) * rollout_batch_size)) -> JSONL rows
    `{"input": rendered prompt, "output": answer, "prompt": messages, "label", "index", "finished"}`.
--task rm: read such a file (--dataset) and score each (input, output).
Scores come from --reward_model (read at the last non-pad token), or --reward_func (`demo` or a .py
file); with --task generate a reward source scores the answers right away. --normalize_reward
z-normalises them. --post_processor rs | csft | iter_dpo turns the scored rows into SFT rows or
preference pairs (rlhfx.sampling.postprocess); the scored samples are then kept beside the output as
`<output>.samples.jsonl`. Every file is written atomically.
"""

import time
from pathlib import Path

from rich.console import Console

from rlhfx.errors import RlhfxError

SUMMARY = "Best-of-n generation, reward scoring and rs/csft/iter_dpo post-processing (OpenRLHF batch_inference)."
DEFAULT_BATCH_SIZE = 16
console = Console(stderr=True, markup=False)  # paths and templates may hold brackets


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("sample", SUMMARY)
    args = parse_args("sample", argv)
    if args.task == "generate_vllm":
        args.values.update(task="generate", engine="vllm")
    check_flags(args)
    if args.task == "generate":
        from rlhfx.models import apply_run_system

        apply_run_system(args)
    from rlhfx.training.runner import quiet_libraries

    quiet_libraries()
    batch_size = args.batch_size if "batch_size" in args.explicit else DEFAULT_BATCH_SIZE
    output = Path(args.output_file or default_output(args))
    from rlhfx.training.outputs import check_can_create

    check_can_create(output, "--output_file")
    rows = generate(args, batch_size) if args.task == "generate" else read_generated(args)
    if has_reward_source(args):
        score(args, rows, batch_size)
    elif args.task == "rm" and not all("reward" in row for row in rows):
        raise RlhfxError("--task rm needs a reward source.",
                         "pass --reward_model FOLDER or --reward_func demo|file.py (OpenRLHF's --pretrain works too).")
    if args.normalize_reward:
        from rlhfx.sampling.postprocess import z_normalize

        for row, z in zip(rows, z_normalize([row["reward"] for row in rows])):
            row["reward"] = z
    write(args, rows, output)


def check_flags(args) -> None:
    from rlhfx.engines import check_engine_available

    if not args.dataset:
        what = "prompts (e.g. demo-prompts or a JSONL file)" if args.task == "generate" else "the generated JSONL file"
        raise RlhfxError(f"No --dataset given for `rlhfx sample --task {args.task}`.", f"pass --dataset with {what}.")
    if args.reward_model and args.reward_func:
        raise RlhfxError("--reward_model and --reward_func both give rewards.", "choose one of them.")
    if args.iter < 0:
        raise RlhfxError(f"--iter is {args.iter}.", "use 0 or a positive iteration number.")
    if args.rollout_batch_size is not None and args.rollout_batch_size < 1:
        raise RlhfxError(f"--rollout_batch_size is {args.rollout_batch_size}.", "use a positive number of prompts.")
    if args.normalize_reward and args.task == "generate" and not has_reward_source(args):
        raise RlhfxError("--normalize_reward needs rewards.", "add --reward_model or --reward_func.")
    if args.post_processor and args.task == "generate" and not has_reward_source(args):
        raise RlhfxError(f"--post_processor {args.post_processor} needs rewards.",
                         "add --reward_model FOLDER or --reward_func demo|file.py.")
    if args.task == "generate":
        check_engine_available(args.engine)
        from rlhfx.engines.loading import sampling_from_args

        sampling_from_args(args)
    if args.reward_func:
        from rlhfx.rewards.functions import load_reward_func

        load_reward_func(args.reward_func)  # a missing or broken file fails before any model loads
    if args.reward_model and not Path(args.reward_model).is_dir():
        raise RlhfxError(f"--reward_model folder {args.reward_model} does not exist.",
                         "pass the output folder of `rlhfx rlhf --rlhf_type rm` or another one-label classifier.")


def has_reward_source(args) -> bool:
    return bool(args.reward_model or args.reward_func or (args.task == "rm" and args.model))


def default_output(args) -> str:
    name = args.task + (f"-{args.post_processor}" if args.post_processor else "")
    return f"output/sample/{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


# --- generate -----------------------------------------------------------------------------------------------


def load_prompt_slice(args) -> tuple[list[dict], int]:
    """The prompts of iteration --iter and the index of the first one."""
    from rlhfx.data.loader import DataConfig, load_data

    config = DataConfig(datasets=args.dataset, kind="prompt", max_samples=args.max_samples, seed=args.seed,
                        prompt_key=args.prompt_key, label_key=args.label_key, messages_key=args.messages_key,
                        system=args.system, input_template=args.input_template)
    rows, _, report = load_data(config)
    for line in report.summary_lines():
        console.print(f"  data: {line}", highlight=False)
    size = args.rollout_batch_size or len(rows)
    start = args.iter * size
    if start >= len(rows):
        raise RlhfxError(f"--iter {args.iter} x --rollout_batch_size {size} starts at prompt {start}, "
                         f"but the data has {len(rows)} prompts.", "use a smaller --iter or --rollout_batch_size.")
    return rows[start : start + size], start


def generate(args, batch_size: int) -> list[dict]:
    from rlhfx.engines.loading import load_generator, sampling_from_args
    from rlhfx.engines.progress import generate_with_progress

    sampling = sampling_from_args(args)
    prompts, first = load_prompt_slice(args)
    generator = load_generator(args, batch_size)
    try:
        encoder = generator.encoder
        ids = [encoder.encode_prompt(row["prompt"]) for row in prompts]
        chunk = batch_size * 4 if args.engine == "pt" else 1024
        results, seconds = generate_with_progress(generator.engine, ids, sampling, chunk, "sample", console)
    finally:
        generator.engine.close()
    rows = []
    for offset, (row, completions) in enumerate(zip(prompts, results)):
        text = encoder.prompt_text(row["prompt"])
        for completion in completions:
            rows.append({"input": text, "output": completion.text, "prompt": row["prompt"], "label": row.get("label"),
                         "index": first + offset, "finished": completion.finished})
    console.print(f"rlhfx sample: {len(prompts)} prompts (#{first}-#{first + len(prompts) - 1}) x {sampling.n} = "
                  f"{len(rows)} samples in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.1f} samples/s, "
                  f"engine {args.engine}, model {generator.spec.display})", highlight=False)
    return rows


def read_generated(args) -> list[dict]:
    from rlhfx.sampling.jsonl import read_jsonl

    rows = []
    for spec in args.dataset:
        rows += read_jsonl(spec)
    missing = next((i for i, r in enumerate(rows) if not isinstance(r.get("input"), str)
                    or not isinstance(r.get("output"), str)), None)
    if missing is not None:
        raise RlhfxError(f"Row {missing} of {', '.join(args.dataset)} has no string 'input' and 'output'.",
                         "pass a file written by `rlhfx sample --task generate` (or OpenRLHF's generate stage).")
    return rows[: args.max_samples] if args.max_samples else rows


# --- rewards ------------------------------------------------------------------------------------------------


def score(args, rows: list[dict], batch_size: int) -> None:
    """Add `"reward"` to every row, from --reward_func or the reward model."""
    start = time.time()
    if args.reward_func:
        from rlhfx.rewards.functions import call_reward_func, load_reward_func

        func = load_reward_func(args.reward_func)
        rewards = call_reward_func(func, [r["input"] + r["output"] for r in rows], [r["input"] for r in rows],
                                   [r.get("label") for r in rows], args.reward_func, args.reward_func_timeout)
        source = f"reward function {args.reward_func}"
    else:
        path = args.reward_model or args.model
        rewards = score_with_reward_model(args, path, rows, batch_size)
        source = f"reward model {path}"
    for row, reward in zip(rows, rewards):
        row["reward"] = reward
    console.print(f"rlhfx sample: scored {len(rows)} samples with {source} in {time.time() - start:.1f} s; "
                  f"{reward_summary(rows)}", highlight=False)


def score_with_reward_model(args, path: str, rows: list[dict], batch_size: int) -> list[float]:
    """Each row's prompt + answer tokenized the way the reward model was trained (its run's template), scored
    at the last non-pad token."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlhfx.rewards.sources import RewardModelScorer, Sample

    scorer = RewardModelScorer(path, args.torch_dtype, batch_size, use_chat_template=args.use_chat_template)
    if scorer.pad_eos_note:
        console.print("note: the reward model's pad token is its EOS token (or missing); scores are read at the "
                      "last non-pad token, which may be before a final EOS.", highlight=False)
    samples = [Sample(row.get("prompt"), row["input"], row["output"], row.get("label")) for row in rows]
    scores, start, chunk = [], time.time(), batch_size * 8
    columns = (TextColumn("[bold]score"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("score", total=len(samples), rate="")
        for first in range(0, len(samples), chunk):
            scores += scorer(samples[first : first + chunk])
            rate = len(scores) / max(time.time() - start, 1e-9)
            progress.update(task, completed=len(scores), rate=f"{rate:.1f} samples/s")
    return scores


def reward_summary(rows: list[dict]) -> str:
    """Mean reward and the mean over prompts of the best reward (best-of-n)."""
    from rlhfx.sampling.postprocess import reward_stats

    stats = reward_stats(rows)
    return (f"mean reward {stats['mean_reward']:.4f}, best-of-n mean {stats['best_of_n_reward']:.4f} over "
            f"{stats['prompts']} prompts")


# --- outputs ------------------------------------------------------------------------------------------------


def write(args, rows: list[dict], output: Path) -> None:
    from rlhfx.sampling.jsonl import write_jsonl_atomic

    if not args.post_processor:
        write_jsonl_atomic(output, rows)
        console.print(f"rlhfx sample: wrote {len(rows)} rows -> {output}", highlight=False)
        return
    from rlhfx.sampling.postprocess import post_process

    processed = post_process(args.post_processor, rows, args.reward_template)
    samples = output.with_name(output.stem + ".samples.jsonl")
    write_jsonl_atomic(samples, rows)
    write_jsonl_atomic(output, processed.rows)
    stats = processed.stats
    what = {"rs": "best answer per prompt (SFT rows)", "csft": "reward-conditioned SFT rows",
            "iter_dpo": "chosen/rejected pairs"}[args.post_processor]
    line = f"rlhfx sample: {args.post_processor}: {len(processed.rows)} {what} from {stats['rows_in']} samples"
    if args.post_processor == "rs":
        line += (f" of {stats['prompts']} prompts; skipped {stats['unfinished_skipped']} answers cut off at "
                 f"--max_new_tokens ({stats['prompts_without_finished']} prompts had no finished answer)")
    if args.post_processor == "iter_dpo":
        line += (f" of {stats['prompts']} prompts; dropped {stats['ties_dropped']} prompts whose best and worst "
                 "rewards tie")
    console.print(f"{line} -> {output} (scored samples: {samples})", highlight=False)
    if not processed.rows and args.post_processor == "rs":
        raise RlhfxError("--post_processor rs produced no rows: every answer was cut off at --max_new_tokens.",
                         "generate again with a higher --max_new_tokens.")
    if not processed.rows:
        raise RlhfxError(f"--post_processor {args.post_processor} produced no rows (every prompt's answers tie).",
                         "sample more answers per prompt (--best_of_n) or at a higher --temperature.")
