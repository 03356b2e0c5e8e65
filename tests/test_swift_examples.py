"""ms-swift's own example scripts (tests/swift_examples.py) run as written, with only the launcher name, model, data
and `--max_steps 1` changed: each finishes its step, or stops at the clear error its table row names."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)
from swift_examples import EXAMPLES, Example

from rlhfx.registry.datasets import DEMO_DATA_DIR

ROOT = Path(__file__).parent.parent
DATA = {"sft": "demo_sft", "pref": "demo_pref", "kto": "demo_kto", "prompts": "demo_prompts", "math": "demo_math"}
SYSTEM = ("The assistant first thinks about the reasoning process and then answers: "
          "<think> reasoning </think><answer> answer </answer>")
# ms-swift's plugin scores answers about images; here its name scores text answers
PLUGIN = "from rlhfx.rewards.builtin import Accuracy, orms\n\norms['external_r1v_acc'] = Accuracy\n"
GSM8K_PLUGIN = Path(__file__).parent / "gsm8k_plugin.py"  # ms-swift's examples/train/grpo/plugin/gsm8k/


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Demo data files, the files the scripts name, and an `rlhfx` on PATH that runs this checkout."""
    folder = tmp_path_factory.mktemp("swift-examples")
    for name, stem in DATA.items():
        rows = (DEMO_DATA_DIR / f"{stem}_train.jsonl").read_text().splitlines()[:32]
        (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    # GSM8K's layout: the reference answer in `answer`, its number after ####
    sums = [json.loads(line) for line in (DEMO_DATA_DIR / "demo_math_train.jsonl").read_text().splitlines()[:32]]
    (folder / "gsm8k.jsonl").write_text("".join(json.dumps({"prompt": row["prompt"], "answer": f"The sum is "
                                                            f"{row['solution']}.\n#### {row['solution']}"}) + "\n"
                                                for row in sums))
    grpo = folder / "examples" / "train" / "grpo"
    (grpo / "plugin" / "gsm8k").mkdir(parents=True)
    (grpo / "prompt.txt").write_text(SYSTEM)
    (grpo / "plugin" / "plugin.py").write_text(PLUGIN)
    shutil.copy(GSM8K_PLUGIN, grpo / "plugin" / "gsm8k" / "gsm8k_plugin.py")
    (folder / "bin").mkdir()
    shim = folder / "bin" / "rlhfx"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m rlhfx "$@"\n')
    shim.chmod(0o755)
    return folder


def run_script(example, workdir: Path) -> tuple[Path, int, str]:
    folder = workdir / example.path.replace("/", "_")
    folder.mkdir()
    env = {**os.environ, "PATH": f"{workdir / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if "--reward_model rm " in example.script and not (workdir / "rm").exists():  # the user's own reward model
        subprocess.run(["rlhfx", "rlhf", "--rlhf_type", "rm", "--model", "tiny", "--dataset", "pref.jsonl",
                        "--max_steps", "2", "--output_dir", "rm"], cwd=workdir, env=env, check=True, capture_output=True)
    for item in workdir.iterdir():
        if item.is_file() or item.name in ("examples", "rm"):
            (folder / item.name).symlink_to(item)
    result = subprocess.run(["bash", "-e", "-c", example.script], cwd=folder, env=env, capture_output=True, text=True,
                            timeout=1200)
    return folder, result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.mark.parametrize("example", [pytest.param(e, marks=[pytest.mark.slow] if e.slow else [],
                                                 id=e.path.removeprefix("examples/train/")) for e in EXAMPLES])
def test_ms_swift_example(example, workdir):
    folder, code, output = run_script(example, workdir)
    if example.expect == "runs":
        assert code == 0, output[-4000:]
        finished = list((folder / "output").rglob("summary.json"))  # without --output_dir: output/tiny/v0-<time>
        assert len(finished) == 1, output[-4000:]
        assert json.loads(finished[0].read_text())["global_step"] == 1
    else:
        assert code != 0, output[-4000:]
        assert example.expect in output, output[-4000:]
        # an rlhfx error, not a crash: no frame of rlhfx's code (torchrun prints its own traceback when a rank fails)
        assert str(ROOT / "rlhfx") not in output, output[-4000:]


# fipo.sh and real.sh start `rlhfx rollout` (a vLLM server: the table row stops there without vLLM) and then the
# trainer. Their trainer command runs here as one process on the CPU that rolls out with the policy itself:
SERVED = [e for e in EXAMPLES if e.path in ("examples/train/grpo/internal/fipo.sh", "examples/train/grpo/internal/real.sh")]
SERVER_FLAGS = ("use_vllm", "vllm_mode", "vllm_server_host", "vllm_server_port")  # no vLLM server to talk to
# fipo.sh's GPU flags, in the order a one-process run checks them: each stops the command with its own error
GPU_FLAGS = {"sequence_parallel_size": "splits each sequence over 2 GPUs",
             "attn_impl": "--attn_impl flash_attn needs a CUDA GPU"}
SHORTER = {"max_completion_length": ["8"], "rollout_batch_size": ["2"]}  # 16 completions of 8 tokens, not 128 of 4096


def trainer_argv(example) -> list[str]:
    """The flags after the script's `rlhfx rlhf`, as bash passes them."""
    return shlex.split(example.script.split("rlhfx rlhf", 1)[1].replace("\\\n", " "))


def without(argv: list[str], drop) -> list[str]:
    """argv without the flags named in `drop` and their values."""
    kept, keep = [], True
    for token in argv:
        if token.startswith("--"):
            keep = token[2:] not in drop
        if keep:
            kept.append(token)
    return kept


def test_fipo_trainer_stops_at_each_gpu_flag_with_its_own_error(run_cli, workdir, monkeypatch):
    """On a CUDA machine FlashAttention's flag is taken, so only the others stop the command there."""
    import torch

    monkeypatch.chdir(workdir)
    argv = without(trainer_argv(SERVED[0]), SERVER_FLAGS)
    stops = {flag: message for flag, message in GPU_FLAGS.items() if flag != "attn_impl" or not torch.cuda.is_available()}
    for flag, message in stops.items():
        code, out = run_cli("rlhf", *argv)
        assert code == 2 and message in out, out[-2000:]
        argv = without(argv, (flag,))


@pytest.mark.parametrize("example", SERVED, ids=lambda e: e.path.rsplit("/", 1)[1])
def test_the_trainer_command_of_fipo_and_real_takes_its_loss(example, workdir):
    """1 step of the trainer command (bfloat16, --deepspeed zero2, --dynamic_sample and the loss flags as written),
    without the server's and GPUs' flags, with SHORTER rollouts (about a minute each on 2 CPU cores)."""
    argv = without(trainer_argv(example), SERVER_FLAGS + tuple(GPU_FLAGS) + tuple(SHORTER))
    argv += [token for name, value in SHORTER.items() for token in (f"--{name}", *value)]
    trainer = Example(example.path + ".trainer", "rlhfx rlhf " + shlex.join(argv), "runs")
    folder, code, output = run_script(trainer, workdir)
    assert code == 0, output[-4000:]
    [metrics] = (folder / "output").rglob("metrics.jsonl")
    [step] = [json.loads(line) for line in metrics.read_text().splitlines() if '"policy_loss"' in line]
    loss = example.path.rsplit("/", 1)[1].removesuffix(".sh")
    [saved] = (folder / "output").rglob("args.json")
    assert json.loads(saved.read_text())["loss_type"] == loss
    if loss == "fipo":  # its statistics logged; nothing clipped the influence weight's mean out of [0.8, 1.2]
        assert 0.8 <= step["fipo_influence_weight_mean"] <= 1.2 and 0 <= step["fipo_safety_keep_ratio"] <= 1
        assert "fipo_future_kl_mean" in step
    else:  # REAL has no ratio clip
        assert "clip_ratio" not in step and "fipo_future_kl_mean" not in step


def test_gsm8k_plugin_scores_as_ms_swift_s():
    """The plugin qlora.sh names: the last \\boxed{} (else the number after ####) against the reference's."""
    import gsm8k_plugin

    completions = ["so \\boxed{1,000}", "#### 42", "42", "#### 41", "\\boxed{x} #### 7"]
    references = ["#### 1000", "The sum is 42.\n#### 42", "#### 42", "#### 42", "\\boxed{x}"]
    assert gsm8k_plugin.GSM8KAccuracy()(completions, references) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert gsm8k_plugin.GSM8KFormat()(completions) == [1.0, 1.0, 0.0, 1.0, 1.0]
