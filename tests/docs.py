"""The documentation's tables, read by the tests that hold the code to them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPERATIONS = (ROOT / "ops" / "OPERATIONS.md").read_text(encoding="utf-8")


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header line starts with `header`, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def json_fields(of: str) -> set[str]:
    """The top-level field names the README documents for `--json` of `of` (e.g. `sweep`,
    `history` items): the backticked names outside parentheses."""
    for cells in table(README, "| `--json` of | fields |"):
        if cells[0] == of:
            outer = re.sub(r"\([^)]*\)", "", cells[1])
            return set(re.findall(r"`(\w+)`", outer))
    raise KeyError(of)
