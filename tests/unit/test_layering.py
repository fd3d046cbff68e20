"""The layers import downwards only: the package never imports ops/ or tests/, and ops/ (the
operator's harnesses, shipped without the test suite) never imports tests/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    """Top-level packages a module imports (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("layer", "forbidden"), [("ops", {"tests"}), ("consumer", {"ops", "tests"})]
)
def test_a_layer_never_imports_the_ones_above_it(layer: str, forbidden: set[str]) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & forbidden)
        for path in sorted((ROOT / layer).rglob("*.py"))
        if imported(path) & forbidden
    }
    assert offenders == {}
