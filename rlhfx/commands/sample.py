"""`rlhfx sample`: OpenRLHF's `batch_inference` stages for rejection sampling, conditional SFT and iterative DPO.

--task generate: best_of_n answers to each prompt of --dataset (iteration --iter takes prompts
    [iter * rollout_batch_size, (iter + 1) * rollout_batch_size)) -> JSONL rows
    `{"input": rendered prompt, "output": answer, "prompt": messages, "label", "index", "finished", "output_ids"}`.
--task rm: read such a file (--dataset) and score each (input, output).
Scores come from --reward_model (read at the last non-pad token), or --reward_func (`demo`, a .py
file or a named reward such as cosine, with the knobs online RL has: --cosine_max_len ...); with --task generate
a reward source scores the answers right away. --normalize_reward
z-normalises them. --post_processor rs | csft | iter_dpo turns the scored rows into SFT rows or
preference pairs (rlhfx.sampling.postprocess); the scored samples are then kept beside the output as
`<output>.samples.jsonl`. Every file is written atomically. The work is done by rlhfx.sampling.batch, which
the loops (rlhfx.loops) call too; this command turns its flags into that library's inputs once.
"""

import time
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.sampling import batch

SUMMARY = "Best-of-n generation, reward scoring and rs/csft/iter_dpo post-processing (OpenRLHF batch_inference)."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("sample", SUMMARY)
    args = parse_args("sample", argv)
    if args.task == "generate_vllm":
        args.values.update(task="generate", engine="vllm")
    batch_size = args.batch_size if "batch_size" in args.explicit else batch.DEFAULT_BATCH_SIZE
    rewards = rewards_of(args, batch_size)
    check_flags(args, rewards)
    if args.task == "generate":
        from rlhfx.models import apply_run_system

        apply_run_system(args)
    from rlhfx.training.runner import quiet_libraries

    quiet_libraries()
    output = Path(args.output_file or default_output(args))
    from rlhfx.training.outputs import check_can_create

    check_can_create(output, "--output_file")
    rows = generate(args, batch_size) if args.task == "generate" else batch.read_generated(args.dataset, args.max_samples)
    if rewards.given:
        batch.score(rows, rewards)
    elif args.task == "rm" and not all("reward" in row for row in rows):
        raise RlhfxError("--task rm needs a reward source.",
                         "pass --reward_model FOLDER or --reward_func demo|file.py (OpenRLHF's --pretrain works too).")
    if args.normalize_reward:
        batch.normalize_rewards(rows)
    batch.write(rows, output, args.post_processor, args.reward_template)


def rewards_of(args, batch_size: int) -> batch.Rewards:
    """--reward_model or --reward_func; with --task rm, --model is the reward model (OpenRLHF's --pretrain)."""
    from rlhfx.algos.options import RewardOptions, build_options

    model = args.model if args.task == "rm" and not args.reward_func else None
    return batch.Rewards(reward_model=args.reward_model or model, reward_func=args.reward_func,
                         reward_func_timeout=args.reward_func_timeout,
                         torch_dtype=args.torch_dtype, use_chat_template=args.use_chat_template, batch_size=batch_size,
                         knobs=build_options(RewardOptions, "sample", args))


def check_flags(args, rewards: batch.Rewards) -> None:
    from rlhfx.engines import check_engine_available

    if not args.dataset:
        what = "prompts (e.g. demo-prompts or a JSONL file)" if args.task == "generate" else "the generated JSONL file"
        raise RlhfxError(f"No --dataset given for `rlhfx sample --task {args.task}`.", f"pass --dataset with {what}.")
    if args.iter < 0:
        raise RlhfxError(f"--iter is {args.iter}.", "use 0 or a positive iteration number.")
    if args.rollout_batch_size is not None and args.rollout_batch_size < 1:
        raise RlhfxError(f"--rollout_batch_size is {args.rollout_batch_size}.", "use a positive number of prompts.")
    if args.normalize_reward and args.task == "generate" and not rewards.given:
        raise RlhfxError("--normalize_reward needs rewards.", "add --reward_model or --reward_func.")
    if args.post_processor and args.task == "generate" and not rewards.given:
        raise RlhfxError(f"--post_processor {args.post_processor} needs rewards.",
                         "add --reward_model FOLDER or --reward_func demo|file.py.")
    if args.task == "generate":
        check_engine_available(args.engine)
        from rlhfx.engines.loading import sampling_from_args

        sampling_from_args(args)
    if args.reward_func or args.reward_model:
        rewards.check()  # two sources, a missing folder or a broken file fail before any model loads


def default_output(args) -> str:
    name = args.task + (f"-{args.post_processor}" if args.post_processor else "")
    return f"output/sample/{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def prompt_data(args, datasets: list[str]):
    """The prompts to answer, read with --prompt_key --label_key --messages_key --max_samples --system ..."""
    from rlhfx.data.loader import DataConfig

    return DataConfig(datasets=datasets, kind="prompt", max_samples=args.max_samples, seed=args.seed,
                      prompt_key=args.prompt_key, label_key=args.label_key, messages_key=args.messages_key,
                      columns=args.columns, system=args.system, input_template=args.input_template)


def generate(args, batch_size: int) -> list[dict]:
    from rlhfx.engines.loading import EngineOptions, sampling_from_args
    from rlhfx.models import model_spec_from_args

    sampling = sampling_from_args(args)
    prompts, first = batch.load_prompt_slice(prompt_data(args, args.dataset), args.iter, args.rollout_batch_size)
    return batch.generate(model_spec_from_args(args), EngineOptions.from_args(args), sampling, prompts, first, batch_size)
