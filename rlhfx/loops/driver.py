"""Run a loop (rlhfx.loops.LOOPS) stage by stage, saving state.json before each stage so a killed run resumes there."""

import time
from pathlib import Path

from rich.console import Console

from rlhfx.errors import RlhfxError
from rlhfx.loops import stages
from rlhfx.loops.state import LoopState, load_or_start
from rlhfx.sampling.jsonl import read_jsonl, write_jsonl_atomic

STAGES = ("generate", "score", "train")
console = Console(markup=False, highlight=False)


def check(spec, args) -> None:
    if not args.model:
        raise RlhfxError("No --model given for the loop.", "pass the initial policy pi_0 (an SFT model) as --model.")
    if not args.dataset:
        raise RlhfxError("No prompts given.", "pass --dataset (or --prompt_data) with prompts, e.g. demo-prompts.")
    if not (args.reward_model or args.reward_func):
        raise RlhfxError(f"`rlhfx pipeline {spec.name}` needs a reward source.",
                         "pass --reward_model FOLDER or --reward_func demo|file.py.")
    stages.rewards(args).check()  # a missing reward model or a broken reward file fails before generation
    if args.training_iters < 1:
        raise RlhfxError(f"--training_iters is {args.training_iters}.", "use 1 or more iterations.")
    if spec.single_pass and "training_iters" in args.explicit and args.training_iters != 1:
        raise RlhfxError(f"`rlhfx pipeline {spec.name}` is a single pass (score, SFT, condition on a high score).",
                         "drop --training_iters.")
    sets = len(args.dataset)
    if 1 < sets < iterations(spec, args):
        raise RlhfxError(f"--dataset gives {sets} prompt sets for --training_iters {args.training_iters}.",
                         "give one prompt set per iteration, or one set that iterations take slices of "
                         "(--rollout_batch_size).")
    unused = sorted(args.explicit - stages.stage_flags(spec))
    if unused:
        raise RlhfxError(f"{', '.join('--' + n for n in unused)} does not apply to `rlhfx pipeline {spec.name}`.",
                         f"drop it (`rlhfx pipeline {spec.name} --help` lists the flags).")


def iterations(spec, args) -> int:
    return 1 if spec.single_pass else args.training_iters


def output_folder(spec, args) -> Path:
    """A fixed default (not timestamped), so that the same command finds its own state again."""
    return Path(args.output_dir or f"output/pipeline/{spec.name}")


def prompts_of(spec, args, iteration: int) -> tuple[list[str], int | None]:
    """Iteration i's prompt set and the slice index `rlhfx sample --iter` takes (None: the whole set). A single-pass
    loop mixes all the sets it is given."""
    if len(args.dataset) > 1 and not spec.single_pass:
        return [args.dataset[iteration]], 0 if args.rollout_batch_size else None
    return args.dataset, iteration if args.rollout_batch_size else None


def policy_of(args, out: Path, iteration: int) -> str:
    """pi_i: the initial model, then the model each iteration trained."""
    return args.model if iteration == 0 else str(out / f"iter_{iteration - 1}" / "model")


def run_loop(spec, args) -> Path:
    from rlhfx.loops.report import write_report
    from rlhfx.training.guards import Interrupted
    from rlhfx.training.runner import quiet_libraries

    check(spec, args)
    quiet_libraries()
    out, total = output_folder(spec, args), iterations(spec, args)
    state, resumed = load_or_start(out, spec.name, args)
    if resumed and state.stage in ("evaluate", "report", "done") and state.iteration < total:
        state.stage = "generate"  # a finished loop extended with a higher --training_iters
        (out / "summary.json").unlink(missing_ok=True)
    if resumed:
        console.print(f"rlhfx pipeline {spec.name}: resuming {out} at iteration {state.iteration}, stage {state.stage}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        while state.iteration < total:
            run_iteration(spec, args, out, state, total)
    except Interrupted as stopped:  # a training stage saved a checkpoint and stopped: the loop's rerun goes on there
        stopped.fix = f"re-run the same `rlhfx pipeline {spec.name}` command: it continues this stage from there."
        raise
    if state.stage == "evaluate":
        timed(state, out, "final/evaluate", lambda: evaluate(spec, args, out, state))
        state.stage = "report"
    write_report(spec, out, total, state)
    state.stage = "done"
    state.save(out)
    return out


def timed(state: LoopState, out: Path, name: str, action) -> None:
    console.print(f"rlhfx pipeline {state.loop}: {name}")
    state.save(out)
    start = time.time()
    action()
    state.seconds[name] = round(time.time() - start, 2)


def run_iteration(spec, args, out: Path, state: LoopState, total: int) -> None:
    i = state.iteration
    folder = out / f"iter_{i}"
    policy = policy_of(args, out, i)
    paths = {"policy": policy, "generated": folder / "generated.jsonl", "scored": folder / "scored.jsonl",
             "data": folder / spec.data_file, "model": folder / "model"}
    state.paths = {k: str(v) for k, v in paths.items()}
    prompts, slice_index = prompts_of(spec, args, i)
    ref = args.model if spec.name == "iterative_dpo" and args.ref_mode == "initial" and i > 0 else None
    actions = {
        "generate": lambda: stages.generate(args, policy, prompts, slice_index, paths["generated"]),
        "score": lambda: (stages.score(args, paths["generated"], paths["scored"]),
                          stages.post_process(args, paths["scored"], paths["data"], spec.post_processor)),
        "train": lambda: train_unless_done(spec, args, policy, paths["data"], paths["model"], ref),
    }
    for stage in STAGES[STAGES.index(state.stage):]:
        state.stage = stage
        timed(state, out, f"iter_{i}/{stage}", actions[stage])
    state.iteration += 1
    state.stage = "generate" if state.iteration < total else "evaluate"
    state.save(out)


def train_unless_done(spec, args, policy: str, data: Path, model: Path, ref: str | None) -> None:
    """A run killed after training finished but before state.json said so is not trained again."""
    if not (model / "summary.json").exists():
        stages.train(args, spec, policy, data, model, ref)


def evaluate(spec, args, out: Path, state: LoopState) -> None:
    """The final policy answers the first iteration's prompts (csft: conditioned on the highest score it was
    trained with), sampled and scored the same way, so its rewards compare with pi_0's."""
    from rlhfx.sampling.postprocess import conditional_sft

    first = {row["index"]: row for row in read_jsonl(out / "iter_0" / "generated.jsonl")}
    prompts = [{"prompt": row["prompt"], "label": row.get("label")} for row in first.values()]
    if spec.name == "csft":
        target = max(row["reward"] for row in read_jsonl(out / "iter_0" / spec.data_file))
        conditioned = conditional_sft([{"input": "", "output": "", "reward": target, "prompt": p["prompt"]}
                                       for p in prompts], args.reward_template).rows
        prompts = [{**p, "prompt": c["messages"][:-1]} for p, c in zip(prompts, conditioned)]
    final = out / "final"
    write_jsonl_atomic(final / "prompts.jsonl", prompts)
    policy = policy_of(args, out, state.iteration)
    state.paths = {"policy": policy, "prompts": str(final / "prompts.jsonl"), "generated": str(final / "generated.jsonl"),
                   "scored": str(final / "scored.jsonl")}
    stages.generate(args, policy, [str(final / "prompts.jsonl")], None, final / "generated.jsonl", loop_file=True)
    stages.score(args, final / "generated.jsonl", final / "scored.jsonl")
