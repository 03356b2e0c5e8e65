"""The `rlhfx` executable: a table of subcommands, the torchrun relaunch, and error printing.

Each subcommand lives in its own module under rlhfx/commands and is imported only when run, so
`rlhfx --help` never loads torch or trl. Adding a subcommand is one entry in COMMANDS.
"""

import importlib
import os
import sys

import typer

from rlhfx.algos import ALGOS
from rlhfx.errors import RlhfxError

# name -> (module with `main(argv)`, one-line summary, launched under torchrun when NPROC_PER_NODE/NNODES is set)
COMMANDS = {
    "sft": ("rlhfx.commands.sft", "Supervised fine-tuning, full or LoRA.", True),
    "rlhf": ("rlhfx.commands.rlhf", f"Preference / RL training: --rlhf_type {'|'.join(n for n in ALGOS if n != 'sft')}.",
             True),
    "infer": ("rlhfx.commands.infer", "Chat with a model (streaming) or answer a file of prompts; --engine pt|vllm.", False),
    "sample": ("rlhfx.commands.sample", "Best-of-n generation, reward scoring, rs/csft/iter_dpo data (OpenRLHF batch_inference).", False),
    "export": ("rlhfx.commands.export", "Merge a LoRA run into its base: a from_pretrained folder (--adapters RUN --merge_lora).", False),
    "data": ("rlhfx.commands.data", "`data check`: how a dataset is read, what is dropped and why, lengths, label balance.", False),
    "rollout": ("rlhfx.commands.rollout", "Serve generation from vLLM for `rlhf --vllm_mode server` (prompts in, tokens out, weights pushed).", False),
    "pipeline": ("rlhfx.commands.pipeline", "Resumable loops that make their own data: rs (RAFT), iterative_dpo, csft.", False),
}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Align language models with human preferences through one command.")


def _register(name: str, module: str, summary: str, distributed: bool) -> None:
    @app.command(name, help=summary, add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command(ctx: typer.Context):
        argv = list(ctx.args)
        if distributed and not any(a in ("-h", "--help") for a in argv):
            from rlhfx.launch import relaunch_under_torchrun

            relaunch_under_torchrun(name, argv)
        importlib.import_module(module).main(argv)


for _name, (_module, _summary, _distributed) in COMMANDS.items():
    _register(_name, _module, _summary, _distributed)


def main() -> None:
    debug = "--debug" in sys.argv or os.environ.get("RLHFX_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        app(standalone_mode=False)
    except RlhfxError as error:
        if debug:
            raise
        from rlhfx.launch import hand_error_to_launcher

        if not hand_error_to_launcher(error):  # a rank of `NPROC_PER_NODE=N rlhfx ...`: the launcher prints it once
            print_error(error)
        sys.exit(getattr(error, "exit_code", 2))  # 2; a run stopped by a signal: 128 + its number
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:
        # Usage errors (unknown subcommand ...) of click, or of the copy of click that newer typer versions bundle.
        if debug or not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        print_error(RlhfxError(error.format_message(), "see `rlhfx --help` for the commands."))
        sys.exit(2)


def print_error(error: RlhfxError) -> None:
    """The error as one short paragraph on stderr: `error:` what and where, `fix:` what to do."""
    from rich.console import Console
    from rich.markup import escape  # messages may hold brackets (`rlhfx[vllm]`, `--lr [1e-4]`)

    # soft_wrap: no line breaks of rich's own, which would cut a long path in two in a log file (rich wraps at 80
    # columns when stderr is not a terminal, as under torchrun or SLURM); the terminal wraps on screen
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[bold red]error:[/bold red] {escape(error.what)}", highlight=False)
    if error.fix:
        console.print(f"[bold]fix:[/bold] {escape(error.fix)}", highlight=False)


if __name__ == "__main__":
    main()
