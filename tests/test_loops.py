"""`rlhfx pipeline rs|iterative_dpo|csft` on the SFT'd tiny model with the demo rule reward: the loops raise the
reward, keep every stage's files per iteration, and a killed run resumes at the stage it was in."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_inprocess import run_cli  # noqa: F401
from e2e import RLHFX

from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.sampling.jsonl import read_jsonl, write_jsonl_atomic

SAMPLING = ["--reward_func", "demo", "--best_of_n", "8", "--max_new_tokens", "16", "--seed", "42"]
TRAINING = ["--train_type", "full", "--batch_size", "8", "--num_train_epochs", "4"]


def summary_of(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def state_of(out) -> dict:
    return json.loads((out / "state.json").read_text())


def test_rs_loop_raises_the_reward(sft_model, tmp_path, run_cli):
    out = tmp_path / "rs"
    code, output = run_cli("pipeline", "rs", "--model", sft_model, "--dataset", "demo-prompts", "--training_iters", "2",
                           "--rollout_batch_size", "32", *SAMPLING, *TRAINING, "--learning_rate", "2e-3",
                           "--output_dir", out)
    assert code == 0, output
    result = summary_of(out)
    first, second = result["iterations"]
    # measured: mean reward 0.09 (pi_0) -> 0.15 (pi_1) -> 0.28 (pi_2 on pi_0's prompts)
    assert result["final"]["mean_reward"] > first["mean_reward"] + 0.1, result
    assert [r["prompts"] for r in result["iterations"]] == [32, 32] and first["samples"] == 32 * 8
    assert {r["index"] for r in read_jsonl(out / "iter_1" / "generated.jsonl")} == set(range(32, 64))  # slice 1
    best = read_jsonl(out / "iter_0" / "sft.jsonl")
    scored = read_jsonl(out / "iter_0" / "scored.jsonl")
    assert len(best) == first["train_rows"] == 32
    assert sum(r["reward"] for r in best) / 32 == pytest.approx(first["best_of_n_reward"])  # each prompt's best answer
    assert json.loads((out / "iter_1" / "model" / "args.json").read_text())["model"] == str(out / "iter_0" / "model")
    assert (out / "rewards.png").stat().st_size > 0 and state_of(out)["stage"] == "done"
    assert len(scored) == 256 and "pi_2*" in output


def test_iterative_dpo_loop_with_a_prompt_set_per_iteration(sft_model, tmp_path, run_cli):
    prompts = read_jsonl(DATA_DIR / "demo_prompts_train.jsonl")
    sets = [write_jsonl_atomic(tmp_path / f"prompts_{i}.jsonl", prompts[32 * i: 32 * (i + 1)]) for i in range(2)]
    out = tmp_path / "dpo"
    code, output = run_cli("pipeline", "iterative_dpo", "--model", sft_model, "--prompt_data", f"{sets[0]},{sets[1]}",
                           "--training_iters", "2", *SAMPLING, *TRAINING, "--learning_rate", "1e-3", "--output_dir", out)
    assert code == 0, output
    result = summary_of(out)
    # measured: mean reward 0.09 (pi_0) -> 0.13 (pi_1) -> 0.20 (pi_2 on pi_0's prompts)
    assert result["final"]["mean_reward"] > result["iterations"][0]["mean_reward"] + 0.05, result
    second = read_jsonl(out / "iter_1" / "generated.jsonl")
    assert {r["label"] for r in second} == {p["label"] for p in prompts[32:64]}  # iteration 1 used the second set
    pairs = read_jsonl(out / "iter_1" / "pairs.jsonl")
    assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)  # ties dropped
    run = json.loads((out / "iter_1" / "model" / "args.json").read_text())
    assert run["model"] == str(out / "iter_0" / "model") and run["ref_model"] == str(sft_model)  # ref fixed at pi_0
    assert json.loads((out / "iter_0" / "model" / "args.json").read_text())["ref_model"] is None  # pi_0 is its own ref


def test_csft_conditions_the_final_answers_on_the_best_score(sft_model, tmp_path, run_cli):
    out = tmp_path / "csft"
    code, output = run_cli("pipeline", "csft", "--model", sft_model, "--dataset", "demo-prompts", "--rollout_batch_size",
                           "8", "--reward_func", "demo", "--best_of_n", "2", "--max_new_tokens", "8",
                           "--normalize_reward", "--train_type", "full", "--max_steps", "2", "--output_dir", out)
    assert code == 0, output
    rows = read_jsonl(out / "iter_0" / "csft.jsonl")
    assert len(rows) == 16 and all("<rm_score>: " in r["messages"][-2]["content"] for r in rows)
    top = max(r["reward"] for r in rows)
    final_prompts = read_jsonl(out / "final" / "prompts.jsonl")
    assert len(final_prompts) == 8
    assert all(p["prompt"][-1]["content"].endswith(f" <rm_score>: {top:.2f} ") for p in final_prompts)
    assert summary_of(out)["final"]["samples"] == 16


def test_killed_loop_resumes_at_the_stage_it_was_in(sft_model, tmp_path, run_cli):
    out = tmp_path / "rs"
    argv = ["pipeline", "rs", "--model", sft_model, "--dataset", "demo-prompts", "--training_iters", "2",
            "--rollout_batch_size", "8", "--reward_func", "demo", "--best_of_n", "2", "--max_new_tokens", "8",
            "--train_type", "full", "--batch_size", "4", "--max_steps", "20", "--output_dir", out]
    process = subprocess.Popen([*RLHFX, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ((out / "state.json").exists() and state_of(out)["iteration"] == 1
                   and state_of(out)["stage"] == "train"):
            assert process.poll() is None, "the loop ended before iteration 1's training started"
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    assert not (out / "iter_1" / "model" / "summary.json").exists() and not (out / "summary.json").exists()
    kept = [out / "iter_0" / "model" / "summary.json", out / "iter_1" / "generated.jsonl", out / "iter_1" / "sft.jsonl"]
    stamps = [path.stat().st_mtime_ns for path in kept]

    code, output = run_cli(*argv)
    assert code == 0, output
    assert "resuming" in output and "at iteration 1, stage train" in output
    assert "rlhfx sample: 8 prompts (#8-#15)" not in output  # iteration 1 was not generated again
    assert [path.stat().st_mtime_ns for path in kept] == stamps  # nor anything before it redone
    assert (out / "iter_1" / "model" / "summary.json").exists() and state_of(out)["stage"] == "done"
    assert len(summary_of(out)["iterations"]) == 2

    code, output = run_cli(*argv[:-2], "--learning_rate", "1e-4", "--output_dir", out)
    assert code == 2 and "started with other flags (--learning_rate differ)" in output, output


def test_bad_loop_inputs_exit_2(tmp_path, run_cli):
    base = ["--model", "tiny", "--dataset", "demo-prompts", "--reward_func", "demo", "--output_dir", tmp_path]
    cases = [
        (["pipeline", "raft", *base], "Unknown loop 'raft'"),
        (["pipeline", "rs", "--model", "tiny", "--dataset", "demo-prompts"], "needs a reward source"),
        (["pipeline", "rs", "--model", "tiny", "--dataset", "demo-prompts", "--reward_model", tmp_path / "gone"],
         "--reward_model folder"),  # before any generation, not at the scoring stage
        (["pipeline", "rs", *base, "--beta", "0.1"], "--beta does not apply to `rlhfx pipeline rs`"),
        (["pipeline", "rs", *base, "--ref_mode", "previous"], "--ref_mode does not apply"),
        (["pipeline", "rs", *base, "--dataset", "a.jsonl", "b.jsonl", "--training_iters", "3"], "2 prompt sets"),
        (["pipeline", "csft", *base, "--training_iters", "2"], "single pass"),
    ]
    for argv, message in cases:
        code, output = run_cli(*argv)
        assert code == 2 and message in output and "Traceback" not in output, (argv, output)
    assert list(tmp_path.iterdir()) == []


def test_pipeline_help_lists_the_loops_and_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['rlhfx', 'pipeline', '--help']\n"
            "from rlhfx.cli import main\n"
            "main()\n"
            "print('HEAVY', [m for m in ('torch', 'trl', 'transformers', 'datasets', 'peft') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "--training_iters" in out and "--ref_mode" in out
    assert all(f"  {loop} " in out for loop in ("rs", "iterative_dpo", "csft"))


def train_rows(run) -> list[tuple]:
    """(step, loss) of every training row a stage's run logged."""
    return [(row["step"], row["loss"]) for row in read_jsonl(run / "metrics.jsonl") if "loss" in row]


def kill_when_saved(argv, checkpoint: Path, signum: int) -> str:
    """Run `rlhfx ARGV` in a new process and send it `signum` once `checkpoint` exists; returns its stderr."""
    process = subprocess.Popen([*RLHFX, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not checkpoint.exists():
            assert process.poll() is None, f"the loop ended before {checkpoint} was saved"
            time.sleep(0.02)
        process.send_signal(signum)
        error = process.communicate(timeout=300)[1]
    finally:
        process.kill()
    assert process.returncode == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGKILL), error
    return " ".join(error.split())


def test_loop_killed_in_training_continues_the_stage_from_its_checkpoint(sft_model, tmp_path, run_cli):
    """A cluster's SIGTERM (the stage saves and stops), then a SIGKILL (the newest periodic checkpoint survives)
    during the training stage: the same command again resumes the stage each time and ends exactly where an
    uninterrupted loop ends."""
    from safetensors.torch import load_file

    # the SFT'd model, whose answers end before --max_new_tokens (rs keeps finished answers only)
    argv = ["pipeline", "rs", "--model", sft_model, "--dataset", "demo-prompts", "--rollout_batch_size", "8",
            "--reward_func", "demo", "--best_of_n", "2", "--max_new_tokens", "32", "--seed", "3", "--train_type", "full",
            "--batch_size", "2", "--max_steps", "16", "--save_steps", "2", "--logging_steps", "1"]
    assert run_cli(*argv, "--output_dir", tmp_path / "whole")[0] == 0
    out = tmp_path / "killed"
    model = out / "iter_0" / "model"
    error = kill_when_saved([*argv, "--output_dir", out], model / "checkpoint-4", signal.SIGTERM)
    assert "re-run the same `rlhfx pipeline rs` command" in error
    stopped_at = max(int(p.name.split("-")[1]) for p in model.glob("checkpoint-*"))
    assert state_of(out)["stage"] == "train" and not (model / "summary.json").exists() and stopped_at < 16

    next_save = stopped_at - stopped_at % 2 + 4  # a periodic checkpoint (--save_steps 2) a few steps on
    kill_when_saved([*argv, "--output_dir", out], model / f"checkpoint-{next_save}", signal.SIGKILL)
    assert state_of(out)["stage"] == "train" and not (model / "summary.json").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in model.glob("checkpoint-*"))
    assert stopped_at < killed_at < 16  # the first rerun resumed the stage and trained on, not from scratch

    code, output = run_cli(*argv, "--output_dir", out)
    assert code == 0 and "resuming from" in output and f"checkpoint-{killed_at}" in output, output
    whole = tmp_path / "whole" / "iter_0" / "model"
    assert train_rows(model) == train_rows(whole) and len(train_rows(whole)) == 16  # step for step, exactly
    resumed, uninterrupted = load_file(model / "model.safetensors"), load_file(whole / "model.safetensors")
    assert all(resumed[k].equal(uninterrupted[k]) for k in uninterrupted)
    assert summary_of(out)["final"] == summary_of(tmp_path / "whole")["final"]


def test_the_score_stage_gets_the_reward_function_timeout(monkeypatch, tmp_path):
    """--reward_func_timeout given to the pipeline reaches the sampling library's scoring, which calls the function."""
    from rlhfx.arguments import parse_args
    from rlhfx.loops import stages
    from rlhfx.sampling import batch
    from rlhfx.sampling.jsonl import write_jsonl_atomic

    seen = []
    monkeypatch.setattr(batch, "score", lambda rows, rewards: seen.append(rewards))
    write_jsonl_atomic(tmp_path / "generated.jsonl", [{"input": "q", "output": "a"}])
    args = parse_args("pipeline", ["--model", "tiny", "--dataset", "demo-prompts", "--reward_func", "demo",
                                   "--reward_func_timeout", "7"])
    stages.score(args, tmp_path / "generated.jsonl", tmp_path / "scored.jsonl")
    assert seen[0].reward_func == "demo" and seen[0].reward_func_timeout == 7.0


def test_the_generate_stage_takes_the_loops_flags_without_argv(monkeypatch, tmp_path):
    """The pipeline's generation flags reach the sampling library as typed values; --batch_size stays the training
    micro batch, and a prompt file the loop wrote is read without the user's prompt-reading flags."""
    from rlhfx.arguments import parse_args
    from rlhfx.loops import stages
    from rlhfx.sampling import batch

    seen = []
    monkeypatch.setattr(batch, "generate", lambda *call: seen.append(call) or [])
    args = parse_args("pipeline", ["--model", "tiny", "--dataset", "demo-prompts", "--reward_func", "demo",
                                   "--best_of_n", "3", "--temperature", "0.5", "--batch_size", "4",
                                   "--max_samples", "5", "--rollout_batch_size", "2"])
    stages.generate(args, "tiny", ["demo-prompts"], 1, tmp_path / "generated.jsonl")
    spec, options, sampling, prompts, first, batch_size = seen[0]
    assert (sampling.n, sampling.temperature, batch_size, options.engine) == (3, 0.5, batch.DEFAULT_BATCH_SIZE, "pt")
    assert (len(prompts), first, spec.model_type.name) == (2, 2, "tiny")  # iteration 1 of slices of 2
    stages.generate(args, "tiny", ["demo-prompts"], None, tmp_path / "final.jsonl", loop_file=True)
    assert len(seen[1][3]) > 5  # --max_samples 5 read the user's prompts, not the loop's own file


def test_the_train_stage_builds_the_commands_flags_without_argv(monkeypatch, tmp_path):
    """The training job gets the Args that `rlhfx rlhf` parses from the command line a user would type for the stage:
    the loop's inputs, and the user's flags that apply to DPO with their types (a list stays a list); the
    prompt-reading flags stay with generation."""
    from rlhfx.algos import job
    from rlhfx.arguments import parse_args
    from rlhfx.loops import LOOPS, stages

    seen = []
    monkeypatch.setattr(job, "train", seen.append)
    args = parse_args("pipeline", ["--model", "tiny", "--dataset", "demo-prompts", "--reward_func", "demo",
                                   "--beta", "0.2", "--lora_target_modules", "q_proj,v_proj", "--learning_rate",
                                   "-1e-3", "--batch_size", "4", "--max_samples", "5", "--attn_impl", "sdpa"])
    stages.train(args, LOOPS["iterative_dpo"], "pi_1", tmp_path / "pairs.jsonl", tmp_path / "model", "pi_0")
    typed = parse_args("rlhf", ["--rlhf_type", "dpo", "--model", "pi_1", "--dataset", str(tmp_path / "pairs.jsonl"),
                                "--output_dir", str(tmp_path / "model"), "--ref_model", "pi_0", "--beta", "0.2",
                                "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "-1e-3",
                                "--batch_size", "4", "--attn_impl", "sdpa"])
    (trained,) = seen
    assert (trained.command, trained.explicit) == ("rlhf", typed.explicit)
    assert list(trained.values.items()) == list(typed.values.items())  # args.json writes them in this order
    assert trained.lora_target_modules == ["q_proj", "v_proj"] and trained.max_samples is None

    stages.train(args, LOOPS["rs"], "pi_0", tmp_path / "sft.jsonl", tmp_path / "sft", None)
    assert seen[1].command == "sft" and seen[1].explicit == typed.explicit - {"rlhf_type", "ref_model", "beta"}
