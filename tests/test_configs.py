"""configs/: every recipe parses for the command its first line names (every key a flag of that command and, for
`rlhf`, of its --rlhf_type; for `pipeline`, of its loop), every algorithm and loop has one, and each runs one
step on the tiny model with the demo data in place of its model, data and GPU-only settings."""

import json
import shlex
from pathlib import Path

import pytest
import yaml
from cli_inprocess import run_cli  # noqa: F401 (fixture)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))


def command_of(recipe: Path) -> list[str]:
    """The command of the recipe's first line `# rlhfx CMD [LOOP] --config configs/PATH`, without `--config`."""
    words = shlex.split(recipe.read_text().splitlines()[0].lstrip("#"))
    assert words[0] == "rlhfx" and words[-2:] == ["--config", f"configs/{recipe.relative_to(CONFIGS)}"], words
    return words[1:-2]


def parsed(recipe: Path):
    """The recipe's flags as the command parses them, checked as `rlhfx rlhf` / `rlhfx pipeline` check them."""
    from rlhfx.arguments import parse_args
    from rlhfx.training.scale import deepspeed_config

    command = command_of(recipe)
    args = parse_args(command[0], [*command[2:], "--config", str(recipe)])
    if command[0] == "rlhf":
        from rlhfx.algos import get_algo
        from rlhfx.commands.rlhf import check_flags_apply

        get_algo(args.rlhf_type)
        check_flags_apply(args)
    if command[0] == "pipeline":
        from rlhfx.loops import LOOPS
        from rlhfx.loops.stages import stage_flags

        assert not args.explicit - stage_flags(LOOPS[command[1]]), f"{recipe}: not used by the loop"
    if "deepspeed" in args.values:
        deepspeed_config(args.deepspeed)  # a preset that exists
    return command, args


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_parses_for_its_command(recipe):
    command, args = parsed(recipe)
    assert args.model and args.dataset
    raw = yaml.safe_load(recipe.read_text())
    if command[0] == "rlhf":
        assert raw["rlhf_type"] == args.rlhf_type and recipe.parent.name in (args.rlhf_type, "ppo", "xright")


def test_every_algorithm_and_loop_has_a_recipe_and_the_index_lists_them():
    from rlhfx.algos import ALGOS
    from rlhfx.loops import LOOPS

    covered = set()
    for recipe in RECIPES:
        command, args = parsed(recipe)
        covered.add({"sft": "sft", "rlhf": args.values.get("rlhf_type"), "pipeline": command[-1]}[command[0]])
    assert covered == {"sft", *ALGOS, *LOOPS}
    index = (CONFIGS / "README.md").read_text()
    assert all(str(recipe.relative_to(CONFIGS)) in index for recipe in RECIPES)
    assert "rlhfx/configs/deepspeed" in index


def test_an_unknown_key_in_a_recipe_is_refused(tmp_path):
    from rlhfx.errors import RlhfxError

    broken = tmp_path / "configs" / "dpo" / "x.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text((CONFIGS / "dpo/llama3-8b-lora.yaml").read_text() + "simpo_gama: 1.0\n")
    with pytest.raises(RlhfxError, match="simpo_gama"):
        from rlhfx.arguments import parse_args

        parse_args("rlhf", ["--config", str(broken)])
    wrong_algo = tmp_path / "kto.yaml"  # a DPO-only key in a KTO recipe
    wrong_algo.write_text((CONFIGS / "kto/llama3-8b-lora.yaml").read_text() + "rpo_alpha: 0.1\n")
    from rlhfx.commands.rlhf import check_flags_apply

    with pytest.raises(RlhfxError, match="rpo_alpha"):
        check_flags_apply(parse_args("rlhf", ["--config", str(wrong_algo)]))


# --- one step on the tiny model -------------------------------------------------------------------------------
DEMO_DATA = {"sft": "demo-sft", "kd": "demo-sft", "kto": "demo-kto", "prm": "demo-prm", "prompts": "demo-prompts"}
PROMPT_DATA = {"ppo", "grpo", "rloo", "reinforce_pp", "rs", "iterative_dpo", "csft"}
# The recipe's data layout (its columns, its raw prompt format), hub-scale sizes, GPU-only and multi-process settings.
DROPPED = {"prompt_key", "chosen_key", "rejected_key", "response_key", "label_key", "messages_key", "input_template",
           "max_samples", "sft_max_samples", "train_batch_size", "eval_steps", "deepspeed", "zero_stage",
           "adam_offload", "flash_attn", "bf16", "ref_offload", "quant_bits", "load_in_4bit", "device_map", "tp_size",
           "enable_prefix_caching", "max_num_seqs", "reward_model"}
SMALL = {"model": "tiny", "ref_model": "tiny", "teacher_model": "tiny",
         "lora_target_modules": "ALL", "engine": "pt", "batch_size": 2, "sft_batch_size": 2,
         "gradient_accumulation_steps": 1, "max_length": 128, "sft_max_len": 128, "rollout_batch_size": 2,
         "micro_rollout_batch_size": 8, "generate_max_len": 4, "max_new_tokens": 32, "prompt_max_len": 64,
         "best_of_n": 2, "training_iters": 1}


def write_length_reward(folder: Path) -> Path:
    """The untrained tiny model scores 0 on the demo reward, so samples would tie and iterative DPO find no pairs."""
    path = folder / "length_reward.py"
    path.write_text("def reward_func(queries, prompts, labels):\n"
                    "    return [float(len(q) - len(p)) for q, p in zip(queries, prompts)]\n")
    return path


def tiny_version(recipe: Path, out: Path) -> tuple[dict, dict]:
    """The recipe with the overrides above (and what it kept, to compare with the run's args.json)."""
    raw = yaml.safe_load(recipe.read_text())
    command = command_of(recipe)
    name = raw.get("rlhf_type") or command[-1]
    replaced = DROPPED | set(SMALL) | {"dataset", "sft_dataset", "output_dir"}
    kept = {k: v for k, v in raw.items() if k not in replaced}
    small = {k: v for k, v in SMALL.items() if k in raw}
    if "sft_dataset" in raw:  # a file: the registry's demo-sft would also evaluate on its 200 bundled validation rows
        from rlhfx.registry.datasets import DEMO_DATA_DIR

        rows = (DEMO_DATA_DIR / "demo_sft_train.jsonl").read_text().splitlines()[:8]
        (out.parent / "sft.jsonl").write_text("\n".join(rows) + "\n")
        small["sft_dataset"] = str(out.parent / "sft.jsonl")
    data = DEMO_DATA["prompts"] if name in PROMPT_DATA else DEMO_DATA.get(name, "demo-pref")
    extra = {"reward_func": str(write_length_reward(out.parent))} if name in PROMPT_DATA else {}
    # a loop trains on what it generated; a run evaluates before and after on 4 rows, not the 200 of the demo set
    steps = {} if command[0] == "pipeline" else {"max_steps": 1, "val_dataset": f"{data}#4"}
    return {**kept, **small, **extra, **steps, "dataset": f"{data}#8", "output_dir": str(out)}, kept


@pytest.mark.slow  # 25 runs (3 of them whole loops): minutes on 2 cores; the parse checks above run in CI
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_runs_one_step_on_the_tiny_model(recipe, tmp_path, run_cli, sft_model):
    command = command_of(recipe)
    config, kept = tiny_version(recipe, tmp_path / "out")
    if command[0] == "pipeline":  # rs keeps only finished answers: the untrained tiny model's rarely end
        config["model"] = str(sft_model)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    code, output = run_cli(*command, "--config", tmp_path / "tiny.yaml")
    assert code == 0, output
    assert (tmp_path / "out" / "summary.json").is_file()
    if command[0] != "pipeline":  # the recipe's own hyper-parameters reached the run
        recorded = json.loads((tmp_path / "out" / "args.json").read_text())
        for key, value in kept.items():
            assert recorded[key] == value, key
