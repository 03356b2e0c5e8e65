"""Flag parsing (both seed dialects, --config, did-you-mean), the fast CLI, and the torchrun relaunch command."""

import json
import re
import subprocess
import sys

import pytest

from rlhfx.arguments import parse_args
from rlhfx.errors import RlhfxError
from rlhfx.launch import rank_error, torchrun_command


def test_aliases_of_both_dialects_land_on_one_name():
    args = parse_args("rlhf", ["--pretrain", "tiny", "--sft_type", "full", "--max_len", "128", "--nll_loss_coef", "0.2",
                               "--micro_train_batch_size", "4", "--max_epochs", "2", "--save_path", "out", "--input_key", "q"])
    assert (args.model, args.train_type, args.max_length, args.rpo_alpha) == ("tiny", "full", 128, 0.2)
    assert (args.batch_size, args.num_train_epochs, args.output_dir, args.prompt_key) == (4, 2.0, "out", "q")


def test_bool_flags_take_a_value_or_none():
    assert parse_args("sft", ["--gradient_checkpointing", "true"]).gradient_checkpointing is True
    assert parse_args("sft", ["--gradient_checkpointing", "false"]).gradient_checkpointing is False
    assert parse_args("sft", ["--gradient_checkpointing"]).gradient_checkpointing is True
    assert parse_args("rlhf", ["--ipo"]).ipo is True


def test_lists_accept_spaces_and_commas():
    args = parse_args("sft", ["--dataset", "a,b", "c", "--dataset_probs", "0.5,0.3,0.2"])
    assert args.dataset == ["a", "b", "c"] and args.dataset_probs == [0.5, 0.3, 0.2]


def test_config_file_is_overridden_by_command_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: tiny\nbeta: 0.3\nmax_len: 64\ndataset: [demo-pref]\n")
    args = parse_args("rlhf", ["--config", str(config), "--beta", "0.5"])
    assert (args.model, args.beta, args.max_length, args.dataset) == ("tiny", 0.5, 64, ["demo-pref"])
    assert "beta" in args.explicit and "seed" not in args.explicit


@pytest.mark.parametrize("argv, message", [
    (["--lerning_rate", "1e-4"], "did you mean --learning_rate"),
    (["--beta", "x"], "invalid float value"),
    (["--train_type", "qlora2"], "invalid choice"),
    (["--gradient_checkpointing", "maybe"], "expected true or false"),
])
def test_bad_flags_name_the_problem(argv, message):
    with pytest.raises(RlhfxError) as error:
        parse_args("rlhf", argv)
    assert message in str(error.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(RlhfxError, match="does not exist"):
        parse_args("sft", ["--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lerning_rate: 1\n")
    with pytest.raises(RlhfxError, match="did you mean --learning_rate"):
        parse_args("sft", ["--config", str(bad)])
    bad.write_text("- a\n- b\n")
    with pytest.raises(RlhfxError, match="mapping"):
        parse_args("sft", ["--config", str(bad)])


def test_rlhf_only_flags_are_refused_by_sft():
    with pytest.raises(RlhfxError, match="Unknown flag --beta"):
        parse_args("sft", ["--beta", "0.1"])


def test_help_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['rlhfx', 'rlhf', '--help']\n"
            "from rlhfx.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'trl', 'transformers', 'datasets', 'peft') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--rlhf_type" in out and "HEAVY []" in out


def test_cli_errors_exit_2_without_traceback():
    result = subprocess.run([sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "dpx"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "did you mean dpo" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "ppo"], capture_output=True, text=True)
    assert result.returncode == 2 and "needs a reward source" in result.stderr and "Traceback" not in result.stderr


def test_torchrun_command_carries_env_and_argv():
    cmd = torchrun_command("rlhf", ["--model", "tiny"], {"NPROC_PER_NODE": "2"})
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                       "-m", "rlhfx", "rlhf", "--model", "tiny"]
    multi = torchrun_command("sft", [], {"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1",
                                         "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert multi[3:13] == ["--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1",
                           "--master_port", "29500"]


def test_the_launcher_reports_the_first_failed_rank_once(tmp_path):
    """`NPROC_PER_NODE=N rlhfx ...`: ranks leave their errors in a folder; the launcher raises one of them."""
    assert rank_error(tmp_path) is None  # every rank succeeded
    for rank, what in ((0, "rank zero's"), (1, "rank one's")):
        (tmp_path / f"rank-{rank}.json").write_text(json.dumps({"what": what, "fix": "f", "exit_code": 143}))
    (tmp_path / "failed_rank.json").write_text(json.dumps({"rank": 1, "exitcode": 2}))
    error = rank_error(tmp_path)
    assert (error.what, error.exit_code) == ("rank one's", 143)  # torchrun's first failure, with its own exit code
    for file in tmp_path.glob("rank-*.json"):
        file.unlink()
    (tmp_path / "failed_rank.json").write_text(json.dumps({"rank": 1, "exitcode": -9}))  # killed without a word
    error = rank_error(tmp_path)
    assert "Rank 1 was killed by SIGKILL" in error.what and "out-of-memory" in error.fix and error.exit_code == 137


def test_flag_of_another_algorithm_is_refused():
    result = subprocess.run([sys.executable, "-m", "rlhfx", "rlhf", "--rlhf_type", "dpo", "--model", "tiny",
                             "--dataset", "demo-pref", "--desirable_weight", "2"], capture_output=True, text=True)
    assert result.returncode == 2 and "--desirable_weight does not apply to --rlhf_type dpo" in result.stderr


def test_openrlhf_minus_one_steps_mean_only_at_the_end():
    from rlhfx.training.hf_args import hf_training_kwargs

    kwargs = hf_training_kwargs(parse_args("sft", ["--save_steps", "-1", "--eval_steps", "-1"]), "out", 1e-4, True)
    assert kwargs["save_strategy"] == "no" and kwargs["eval_strategy"] == "no"
    kwargs = hf_training_kwargs(parse_args("sft", ["--eval_steps", "5"]), "out", 1e-4, True)
    assert kwargs["save_strategy"] == "steps" and (kwargs["eval_strategy"], kwargs["eval_steps"]) == ("steps", 5)


@pytest.mark.parametrize("algo", ["sft", "dpo", "kto", "rm", "grpo", "alright"])
def test_learning_rate_help_states_the_defaults_the_run_uses(algo, capsys):
    """The help reads each algorithm's default learning rates from the table the runner takes them from."""
    from rlhfx.algos import ALGOS
    from rlhfx.arguments import FLAGS, print_help

    lora, full = ALGOS[algo].default_lr("lora"), ALGOS[algo].default_lr("full")
    if algo == "sft":
        assert (lora, full) == (2e-4, 1e-4)
    print_help("sft" if algo == "sft" else "rlhf", "summary", algo=None if algo == "sft" else algo)
    text = " ".join(capsys.readouterr().out.split())
    lora, full = (f"{x:.0e}".replace("e-0", "e-") for x in (lora, full))
    wanted = f"{lora} LoRA, {full} full"
    assert wanted in text, text[text.find("--learning_rate"):][:300]
    general = next(f for f in FLAGS if f.name == "learning_rate").help  # --help without an algorithm, docs/cli.md
    assert re.search(rf"{lora} / {full} for [a-z_, ]*\b{algo}\b", general), general


@pytest.mark.parametrize("name", [n for n, a in __import__("rlhfx.algos").algos.ALGOS.items() if a.options])
def test_algorithm_help_shows_its_own_options_and_defaults(name, capsys):
    """The algorithm's flags come from its options class: each is a flag taken by exactly the algorithms declaring it,
    and `--rlhf_type NAME --help` states NAME's own default (simpo's beta 2.0, not dpo's 0.1)."""
    from dataclasses import fields

    from rlhfx.algos import ALGOS
    from rlhfx.arguments import FLAGS, print_help

    print_help("rlhf", "summary", algo=name)
    out = capsys.readouterr().out
    by_name = {f.name: f for f in FLAGS if "rlhf" in f.commands}
    for field in fields(ALGOS[name].options):
        declaring = {n for n, a in ALGOS.items() if a.options and field.name in {f.name for f in fields(a.options)}}
        assert declaring <= set(by_name[field.name].algos), field.name
        assert not set(by_name[field.name].algos) - declaring - {n for n, a in ALGOS.items() if a.kind == "prompt"}
        if field.default is not None:
            row = " ".join(out[re.search(rf"^  --{field.name}[ ,]", out, re.M).start():].split())  # its own row
            assert row[row.index("(default: "):].startswith(f"(default: {field.default})"), (field.name, row)
