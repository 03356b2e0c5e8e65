"""The stages of a loop: the sampling library (rlhfx.sampling.batch) that `rlhfx sample` runs and the training job
(rlhfx.algos.job) that `rlhfx sft` / `rlhfx rlhf` run, called with the loop's own inputs and those of the user's
flags that each stage takes.

Which user flags go where: every explicit flag that the stage takes, except the ones the loop sets itself (model,
data, output) and those that mean something else for one of the stages: --batch_size is the training micro batch
(generation keeps `rlhfx sample`'s default), the prompt-reading flags (--prompt_key, --max_samples, --system, ...)
belong to generation, the reward flags to scoring, --normalize_reward and --reward_template to post-processing.
A flag the user did not give has the same default in every stage (one flag table), so generation and scoring read
the loop's own parsed flags, and training gets its command's flags built from them (`training_args`), not an argv.
"""

import copy
import gc
from pathlib import Path

from rlhfx.algos import job
from rlhfx.algos.options import RewardOptions, build_options
from rlhfx.arguments import Args, flags_for, parse_args
from rlhfx.sampling import batch

LOOP_SETS = {"model", "dataset", "output_dir", "rollout_batch_size"}
SCORING = {"reward_model", "reward_func", "reward_func_timeout"}
POST_PROCESSING = {"normalize_reward", "reward_template"}
PROMPT_READING = {"prompt_key", "label_key", "messages_key", "columns", "max_samples", "system", "input_template"}
TRAINING_ONLY = {"batch_size"}


def command_flags(command: str) -> set[str]:
    return {flag.name for flag in flags_for(command)}


def default(name: str):
    return next(flag.default for flag in flags_for("pipeline") if flag.name == name)


def generate_flags() -> set[str]:
    return command_flags("sample") - LOOP_SETS - SCORING - POST_PROCESSING - TRAINING_ONLY


def train_flags(spec) -> set[str]:
    """The training command's flags that apply to its algorithm (not, say, PPO's reward flags for DPO)."""
    applies = {flag.name for flag in flags_for(spec.command) if flag.algos is None or spec.train in flag.algos}
    return applies - LOOP_SETS - PROMPT_READING


def stage_flags(spec) -> set[str]:
    """Every flag some stage of this loop uses, plus the loop's own."""
    own = {"training_iters"} | ({"ref_mode"} if spec.name == "iterative_dpo" else set())
    return generate_flags() | SCORING | POST_PROCESSING | train_flags(spec) | LOOP_SETS | own


def rewards(args) -> batch.Rewards:
    """The scoring stage's reward source: the reward flags and --torch_dtype; the rest as `rlhfx sample` has them."""
    return batch.Rewards(reward_model=args.reward_model, reward_func=args.reward_func,
                         reward_func_timeout=args.reward_func_timeout, torch_dtype=args.torch_dtype,
                         use_chat_template=default("use_chat_template"), batch_size=batch.DEFAULT_BATCH_SIZE,
                         knobs=build_options(RewardOptions, "pipeline", args))


def free_memory() -> None:
    """Let go of the last stage's models before the next one loads its own (GPU memory above all)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prompt_data(args, policy: str, prompts: list[str], loop_file: bool):
    """How the prompts are read: the user's prompt-reading flags, except for a prompt file the loop wrote itself
    (`loop_file`), which is read as it is. Without --system, the system prompt `policy`'s run recorded."""
    from rlhfx.data.loader import DataConfig
    from rlhfx.models import run_args

    reading = {name: default(name) if loop_file else args.values[name] for name in PROMPT_READING}
    if loop_file or "system" not in args.explicit:
        reading["system"] = run_args(policy if Path(policy).is_dir() else None).get("system") or reading["system"]
    return DataConfig(datasets=prompts, kind="prompt", seed=args.seed, **reading)


def generate(args, policy: str, prompts: list[str], iteration: int | None, output: Path,
             loop_file: bool = False) -> None:
    """`rlhfx sample --task generate`: --best_of_n answers of `policy` to the prompts (slice `iteration`, if given)."""
    from rlhfx.engines.loading import EngineOptions, sampling_from_args
    from rlhfx.models import resolve_model_spec

    size = args.rollout_batch_size if iteration is not None else None
    rows, first = batch.load_prompt_slice(prompt_data(args, policy, prompts, loop_file), iteration or 0, size)
    spec = resolve_model_spec(policy, args.model_type, None, args.template, args.use_chat_template,
                              args.enable_thinking)
    rows = batch.generate(spec, EngineOptions.from_args(args), sampling_from_args(args), rows, first,
                          batch.DEFAULT_BATCH_SIZE)
    batch.write(rows, output, None, args.reward_template)
    free_memory()


def score(args, generated: Path, output: Path) -> None:
    """`rlhfx sample --task rm`: the raw reward of every sample (what the loop's report reads)."""
    rows = batch.read_generated([str(generated)])
    batch.score(rows, rewards(args))
    batch.write(rows, output, None, args.reward_template)
    free_memory()


def post_process(args, scored: Path, output: Path, post_processor: str) -> None:
    """`rlhfx sample --task rm --post_processor P` on scored samples: (normalised) rewards -> training data."""
    rows = batch.read_generated([str(scored)])
    if args.normalize_reward:
        batch.normalize_rewards(rows)
    batch.write(rows, output, post_processor, args.reward_template)


def training_args(args, spec, policy: str, data: Path, output: Path, ref_model: str | None) -> Args:
    """The flags of `rlhfx sft|rlhf` for this stage, as parse_args would give them for the command line a user would
    type: the command's defaults, then the loop's inputs and the user's explicit flags that the stage takes (as the
    loop parsed them: one flag table, so the same types), which count as given."""
    from rlhfx.training.checkpoints import newest_checkpoint

    given = {name: copy.deepcopy(args.values[name]) for name in train_flags(spec)
             if name in args.explicit and args.values[name] is not None}
    given |= {"model": policy, "dataset": [str(data)], "output_dir": str(output)}
    given |= {"rlhf_type": spec.train} if spec.command == "rlhf" else {}
    given |= {"ref_model": ref_model} if ref_model else {}
    given |= {"resume_from_checkpoint": "latest"} if newest_checkpoint(output) else {}
    defaults = parse_args(spec.command, []).values  # typed as parsing types them (a list flag's default is a list)
    return Args(command=spec.command, values={**defaults, **given}, explicit=set(given))


def train(args, spec, policy: str, data: Path, output: Path, ref_model: str | None) -> None:
    """The loop's training job on this iteration's data, from `policy`, into `output`; a stage that a kill or
    SIGTERM interrupted goes on from its newest complete checkpoint."""
    job.train(training_args(args, spec, policy, data, output, ref_model))
    free_memory()
