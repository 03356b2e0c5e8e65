"""Every bad input of the error table (tests/bad_inputs.py) fails before training with a clear message: exit code 2,
the words that name the problem, no traceback, no output that looks complete; docs/troubleshooting.md shows it."""

from pathlib import Path

import pytest
from bad_inputs import CASES, error_message, run_case

DOC = Path(__file__).parent.parent / "docs" / "troubleshooting.md"


def test_the_table_is_big_and_covers_every_command():
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)
    assert {case.argv[0] for case in CASES} >= {"sft", "rlhf", "infer", "sample", "export", "data"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_a_clear_error(case, tmp_path):
    code, text = run_case(case, tmp_path)
    assert code == 2, text
    for word in case.words:
        assert word.lower() in text.lower(), f"{word!r} not in: {text}"
    assert "Traceback" not in text
    assert not list(tmp_path.rglob("summary.json")), "a failed run left a folder that looks complete"
    assert not (tmp_path / case.output).is_file() and not (tmp_path / case.output / "config.json").exists()
    assert error_message(text) in " ".join(DOC.read_text().split()), "run: python scripts/gen_troubleshooting.py"


def test_debug_shows_the_traceback_of_a_new_command():
    import subprocess
    import sys

    argv = [sys.executable, "-m", "rlhfx", "data", "chek"]
    plain = subprocess.run(argv, capture_output=True, text=True)
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "Unknown subcommand" in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RlhfxError: Unknown subcommand" in debug.stderr
