"""Regenerate docs/cli.md from the algorithm records (rlhfx/algos) and the flag table in rlhfx/arguments.py
(tests/test_docs.py checks it is current)."""

from dataclasses import fields
from pathlib import Path

from rlhfx.algos import ALGOS
from rlhfx.algos.options import RLOptions, default_of
from rlhfx.arguments import FLAGS, rate

HEADER = """# CLI reference

`rlhfx COMMAND [flags]` or `rlhfx COMMAND --config run.yaml [flags]` (YAML keys are flag names or aliases;
flags on the command line win). `rlhfx COMMAND --help` prints this table; `rlhfx rlhf --rlhf_type NAME --help`
prints only the flags that matter for NAME. Add `--debug` to see a traceback instead of the one-paragraph error.

| command | what it does |
| --- | --- |
| `rlhfx sft` | supervised fine-tuning, full or LoRA, loss on assistant tokens only |
| `rlhfx rlhf --rlhf_type NAME` | preference / RL training: {implemented} (see [Algorithms](#algorithms)) |
| `rlhfx export --adapters RUN --merge_lora` | a LoRA run merged into its base: one `from_pretrained` folder |
| `rlhfx data check --dataset D --rlhf_type T` | how the data is read (layout, column mapping), drops by reason, lengths; exit 2 when unusable |

Boolean flags take `true/false` or no value (`--gradient_checkpointing` = `--gradient_checkpointing true`).
List flags take several values or a comma-separated list (`--dataset a b` = `--dataset a,b`).

## Launching on several processes

`NPROC_PER_NODE=N rlhfx ...` re-runs the same command under `python -m torch.distributed.run --nproc_per_node N`
(plus `--nnodes/--node_rank/--master_addr/--master_port` from `NNODES`, `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
Without CUDA the processes train on the CPU over gloo. At the end every rank's weights are compared; a mismatch
(gradients not synchronised) is an error, and `summary.json` records the per-rank checksums.
DeepSpeed ZeRO presets, multi-node launches and the memory flags: [distributed.md](distributed.md).
"""

DIALECTS = """## Seed dialects

| ms-swift | OpenRLHF | rlhfx |
| --- | --- | --- |
| `--model_id_or_path`, `--model_type` | `--pretrain` | `--model` (+ `--model_type`) |
| `--sft_type` / `--train_type` | `--lora_rank > 0` | `--train_type full` or `lora` |
| `--batch_size` | `--micro_train_batch_size` | `--batch_size` |
| | `--train_batch_size` | `--train_batch_size` (sets gradient accumulation) |
| `--num_train_epochs` | `--max_epochs` | `--num_train_epochs` |
| `--max_length` | `--max_len` | `--max_length` |
| `--rpo_alpha` | `--nll_loss_coef` | `--rpo_alpha` |
| | `--ipo` | `--loss_type ipo` |
| | `--input_key`, `--output_key` | `--prompt_key`, `--response_key` |
| | `--apply_chat_template` | `--use_chat_template` |
| `--output_dir` | `--save_path` | `--output_dir` |
"""


RL_FIELDS = {f.name: f for f in fields(RLOptions)}


def algorithms() -> list[str]:
    """The table of algorithm records (rlhfx/algos/__init__.py) and each one's own flags with its defaults."""
    lines = ["## Algorithms", "", "`rlhfx sft` and `rlhfx rlhf --rlhf_type NAME`; `rlhfx rlhf --rlhf_type NAME --help` "
             "prints NAME's flags with its defaults.", "",
             "| name | what it trains | data | reference model | default lr (LoRA / full) | its flags (default) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for algo in ALGOS.values():
        own = ", ".join(f"`--{f.name}` ({str(default_of(f)).replace('|', '/')})" for f in fields(algo.options)
                        if not algo.kind == "prompt" or default_of(f) != default_of(RL_FIELDS[f.name])) \
            if algo.options else ""
        if algo.kind == "prompt":  # ppo's options and its presets' own defaults
            own = ", ".join(filter(None, [own, "the online rl flags"]))
        lines.append(f"| `{algo.name}` | {algo.summary} | {algo.kind} | {'yes' if algo.needs_reference else 'no'} | "
                     f"{rate(algo.lr_lora)} / {rate(algo.lr_full)} | {own} |")
    return lines + [""]


def render() -> str:
    implemented = ", ".join(f"`{n}`" for n in ALGOS if n != "sft")
    lines = [HEADER.format(implemented=implemented), *algorithms()]
    groups: dict[str, list] = {}
    for flag in FLAGS:
        groups.setdefault(flag.group, []).append(flag)
    for group, flags in groups.items():
        lines += [f"## {group}", "", "| flag | aliases | commands | default | meaning |", "| --- | --- | --- | --- | --- |"]
        for f in flags:
            aliases = ", ".join(f"`--{a}`" for a in f.aliases)
            commands = " ".join(f.commands) + (f" ({', '.join(f.algos)})" if f.algos else "")
            default = "" if f.default is None else f"`{f.default}`"
            choices = f" One of: {', '.join(map(str, f.choices))}." if f.choices else ""
            lines.append(f"| `--{f.name}` | {aliases} | {commands} | {default} | {f.help.replace('|', '/')}{choices} |")
        lines.append("")
    return "\n".join(lines) + "\n" + DIALECTS


if __name__ == "__main__":
    Path(__file__).parent.parent.joinpath("docs", "cli.md").write_text(render())
