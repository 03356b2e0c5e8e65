"""The CLI reference documents every flag and alias that exists."""

from pathlib import Path

from rlhfx.arguments import FLAGS

DOC = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()


def test_every_flag_and_alias_is_documented():
    missing = [f"--{name}" for flag in FLAGS for name in (flag.name, *flag.aliases) if f"`--{name}`" not in DOC]
    assert not missing, f"docs/cli.md lacks {missing}"
