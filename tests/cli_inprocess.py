"""Run the `rlhfx` CLI in the test process (fast: no new interpreter) and return its exit code and output.

Use for checks that fail before a model loads (bad flags, missing files); import the fixture with
`from cli_inprocess import run_cli`.
"""

import sys

import pytest


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`run_cli("sample", "--flag", value, ...)` -> (exit code, stdout + stderr with all whitespace runs made one
    space, since rich wraps long lines)."""
    from rlhfx.cli import main

    def run(*argv) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["rlhfx", *map(str, argv)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        captured = capsys.readouterr()
        return code, " ".join((captured.out + captured.err).split())

    return run
