"""Regenerate docs/troubleshooting.md by running every case of the error table (tests/bad_inputs.py) and quoting
what rlhfx says; tests/test_bad_inputs.py fails when a message is not on the page (about a minute on 2 CPUs)."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's rlhfx and the table
from bad_inputs import CASES, error_message, run_case  # noqa: E402

HEADER = """# Troubleshooting

Every rlhfx error is one paragraph: `error:` says what is wrong and where (flag, file, line, row), `fix:` says
what to do. The exit code is 2 and no traceback is printed; add `--debug` (or set `RLHFX_DEBUG=1`) to see one.
Bad input is caught before training starts, and a run folder without `summary.json` is not a finished run.

Run `rlhfx data check --dataset D --rlhf_type T` to see how a dataset will be read (layout, column mapping, rows
dropped and why, lengths) before training on it. Dropped rows never disappear silently: each run's
`data_report.json` counts them by reason, with an example row.

This page is generated from the error table in `tests/bad_inputs.py` (`python scripts/gen_troubleshooting.py`);
each message below is what that command prints today.
"""


def render(messages: dict[str, str]) -> str:
    lines = [HEADER]
    sections: dict[str, list] = {}
    for case in CASES:
        sections.setdefault(case.command, []).append(case)
    for section, cases in sections.items():
        lines += [f"## {section}", ""]
        for case in cases:
            command = " ".join(a if a and " " not in a and "\n" not in a else repr(a) for a in case.argv)
            lines += [f"### {case.problem}", "", "```", f"$ rlhfx {command}"]
            lines += [f"  ({name}: {_show(content)})" for name, content in case.files.items()]
            lines += [messages[case.id].replace(" fix: ", "\nfix: ", 1), "```", ""]
    return "\n".join(lines)


def _show(content) -> str:
    """A data file of the table as the page shows it: short text as it is, the rest described."""
    if content is None:
        return "a folder"
    if isinstance(content, bytes):
        return f"bytes {content!r}"
    return repr(content) if len(content) < 120 else f"{len(content.splitlines())} lines"


def messages() -> dict[str, str]:
    out = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            try:
                code, text = run_case(case, Path(folder))
            except Exception as error:  # a crash: listed, and the test of the case fails
                code, text = 1, f"crash: {type(error).__name__}: {error}"
        if code != 2:
            print(f"{case.id}: exit code {code}: {text[-500:]}", file=sys.stderr)
        out[case.id] = error_message(text)
    return out


if __name__ == "__main__":
    (ROOT / "docs" / "troubleshooting.md").write_text(render(messages()))
