"""docs/cli.md is the current rendering of the flag table (regenerate: python scripts/gen_cli_doc.py)."""

import runpy
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_cli_reference_is_current():
    render = runpy.run_path(str(ROOT / "scripts" / "gen_cli_doc.py"))["render"]
    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run: python scripts/gen_cli_doc.py"


def test_migration_pages_are_current():
    script = runpy.run_path(str(ROOT / "scripts" / "gen_migrating_docs.py"))
    for page, (tool, names) in script["PAGES"].items():
        assert (ROOT / "docs" / page).read_text() == script["render"](tool, names), "run: python scripts/gen_migrating_docs.py"
