"""The stages of a loop: the real `rlhfx sample`, `rlhfx sft` and `rlhfx rlhf` commands, called in-process with
the loop's own flags plus those of the user's flags that each command takes.

Which user flags go where: every explicit flag that the stage's command takes, except the ones the loop sets
itself (model, data, output) and those that mean something else for one of the stages: --batch_size is the
training micro batch (generation keeps `rlhfx sample`'s default), the prompt-reading flags (--prompt_key,
--max_samples, --system, ...) belong to generation, the reward flags to scoring, --normalize_reward and
--reward_template to post-processing.
"""

import gc
from pathlib import Path

from rlhfx.arguments import flags_for

LOOP_SETS = {"model", "dataset", "output_dir", "rollout_batch_size"}
SCORING = {"reward_model", "reward_func", "reward_func_timeout"}
POST_PROCESSING = {"normalize_reward", "reward_template"}
PROMPT_READING = {"prompt_key", "label_key", "messages_key", "max_samples", "system", "input_template"}
TRAINING_ONLY = {"batch_size"}


def command_flags(command: str) -> set[str]:
    return {flag.name for flag in flags_for(command)}


def forwarded(args, names: set[str]) -> list[str]:
    """argv for the user's explicit flags among `names`, in the table's order."""
    argv = []
    for flag in flags_for("pipeline"):
        if flag.name in names and flag.name in args.explicit and args.values[flag.name] is not None:
            value = args.values[flag.name]
            argv += [f"--{flag.name}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv


def generate_flags() -> set[str]:
    return command_flags("sample") - LOOP_SETS - SCORING - POST_PROCESSING - TRAINING_ONLY


def train_flags(spec) -> set[str]:
    """The training command's flags that apply to its algorithm (not, say, PPO's reward flags for DPO)."""
    algo = spec.train[2] if spec.train[0] == "rlhf" else spec.train[0]
    applies = {flag.name for flag in flags_for(spec.train[0]) if flag.algos is None or algo in flag.algos}
    return applies - LOOP_SETS - PROMPT_READING


def stage_flags(spec) -> set[str]:
    """Every flag some stage of this loop uses, plus the loop's own."""
    own = {"training_iters"} | ({"ref_mode"} if spec.name == "iterative_dpo" else set())
    return generate_flags() | SCORING | POST_PROCESSING | train_flags(spec) | LOOP_SETS | own


def free_memory() -> None:
    """Let go of the last stage's models before the next one loads its own (GPU memory above all)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate(args, policy: str, prompts: list[str], iteration: int | None, output: Path,
             loop_file: bool = False) -> None:
    """`rlhfx sample --task generate`: --best_of_n answers of `policy` to the prompts (slice `iteration`, if given).
    A prompt file the loop wrote itself (`loop_file`) is read as it is, without the user's prompt-reading flags."""
    from rlhfx.commands import sample

    argv = ["--task", "generate", "--model", policy, "--dataset", *prompts, "--output_file", str(output)]
    if iteration is not None:
        argv += ["--iter", str(iteration)]
        if args.rollout_batch_size:
            argv += ["--rollout_batch_size", str(args.rollout_batch_size)]
    sample.main(argv + forwarded(args, generate_flags() - (PROMPT_READING if loop_file else set())))
    free_memory()


def score(args, generated: Path, output: Path) -> None:
    """`rlhfx sample --task rm`: the raw reward of every sample (what the loop's report reads)."""
    from rlhfx.commands import sample

    sample.main(["--task", "rm", "--dataset", str(generated), "--output_file", str(output)]
                + forwarded(args, SCORING | {"torch_dtype"}))
    free_memory()


def post_process(args, scored: Path, output: Path, post_processor: str) -> None:
    """`rlhfx sample --task rm --post_processor P` on scored samples: (normalised) rewards -> training data."""
    from rlhfx.commands import sample

    sample.main(["--task", "rm", "--dataset", str(scored), "--post_processor", post_processor, "--output_file",
                 str(output)] + forwarded(args, POST_PROCESSING))


def train(args, spec, policy: str, data: Path, output: Path, ref_model: str | None) -> None:
    """The loop's training command on this iteration's data, from `policy`, into `output`; a stage that a kill or
    SIGTERM interrupted goes on from its newest complete checkpoint."""
    from importlib import import_module

    from rlhfx.training.checkpoints import newest_checkpoint

    argv = [*spec.train[1:], "--model", policy, "--dataset", str(data), "--output_dir", str(output)]
    argv += ["--ref_model", ref_model] if ref_model else []
    argv += ["--resume_from_checkpoint", "latest"] if newest_checkpoint(output) else []
    import_module(f"rlhfx.commands.{spec.train[0]}").main(argv + forwarded(args, train_flags(spec)))
    free_memory()
