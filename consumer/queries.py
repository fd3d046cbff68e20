"""The SQL the archiver runs: named blocks of sql/queries.sql and the numbered migrations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def sql_dir() -> Traversable:
    """sql/ inside the installed wheel, or at the repository root in a development checkout."""
    packaged = resources.files("consumer") / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@cache
def named() -> dict[str, str]:
    """Every `-- name: X` block of queries.sql, by name."""
    text = (sql_dir() / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def get(name: str) -> str:
    return named()[name]


def migrations() -> list[Migration]:
    """The numbered migration files, in order."""
    found = []
    for entry in sql_dir().iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)
