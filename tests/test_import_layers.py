"""Imports run one way (shared/docs/ARCHITECTURE.md, Layers): a package may import its own tier or a lower one only.

The redesign (issue 14) removed the last back-edges: KNOWN_BACK_EDGES is empty, and stays so. A back-edge that
must land before its fix is listed there with the reason: the test fails on any back-edge not listed, and also
when a listed one is gone, so the list only ever shrinks.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rlhfx"

# Lower number = higher layer. Packages of one tier may import each other, as long as no cycle forms.
TIERS = {
    "__main__": 0, "cli": 0,
    "commands": 1, "launch": 1,
    "loops": 2,
    "arguments": 2,  # the flag table is generated from the algorithm records and options (rlhfx.algos)
    "algos": 3,
    "training": 4,
    "models": 5, "data": 5, "templates": 5, "engines": 5, "rewards": 5, "sampling": 5,
    "registry": 6, "configs": 6,
    "errors": 7, "redact": 7,
}

KNOWN_BACK_EDGES: set[tuple[str, str]] = set()


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rlhfx"


def _literal_prefix(node) -> str:
    """The module an import_module call names, as far as it is written out: "rlhfx.commands." of
    f"rlhfx.commands.{name}" (a dynamic import is an edge too)."""
    if isinstance(node, ast.JoinedStr):
        node = node.values[0] if node.values else None
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the files and lines where it happens, top-level or inside functions."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        source = _package_of(".".join(relative.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Call) and "import_module" in (getattr(node.func, "id", None),
                                                                    getattr(node.func, "attr", None)):
                targets = [_literal_prefix(node.args[0])] if node.args else []
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "rlhfx" and _package_of(target) not in ("rlhfx", source):
                    edges.setdefault((source, _package_of(target)), []).append(f"{relative}:{node.lineno}")
    return edges


def test_every_package_has_a_tier():
    packages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert packages <= set(TIERS), f"give these packages a tier in TIERS: {sorted(packages - set(TIERS))}"


def test_no_new_back_edge():
    back = {edge: where for edge, where in package_edges().items() if TIERS[edge[0]] > TIERS[edge[1]]}
    new = {edge: where for edge, where in back.items() if edge not in KNOWN_BACK_EDGES}
    assert not new, f"imports that run upward (move the code down, or pass it in from above): {new}"
    gone = KNOWN_BACK_EDGES - set(back)
    assert not gone, f"these back-edges are gone: remove them from KNOWN_BACK_EDGES: {sorted(gone)}"


def test_no_cycle_between_packages_of_one_tier():
    edges = {edge for edge in package_edges() if TIERS[edge[0]] == TIERS[edge[1]]}
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, f"packages importing each other: {cycles}"


def test_known_back_edges_are_real_back_edges():
    downward = sorted(edge for edge in KNOWN_BACK_EDGES if TIERS[edge[0]] <= TIERS[edge[1]])
    assert not downward, f"{downward} run downward: they do not belong in KNOWN_BACK_EDGES"
