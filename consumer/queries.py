"""The SQL the archiver runs: named blocks of sql/queries*.sql and the numbered migrations.

Each capability keeps its named queries in its own file (queries.sql for archiving,
queries_<capability>.sql for the others); a name is unique across all of them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")
_QUERIES = re.compile(r"^queries(_\w+)?\.sql$")


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


def query_files() -> list[Traversable]:
    """sql/queries.sql and every sql/queries_<capability>.sql, by name."""
    return sorted((e for e in sql_dir().iterdir() if _QUERIES.match(e.name)), key=lambda e: e.name)


@cache
def named() -> dict[str, str]:
    """Every `-- name: X` block of the query files, by name; a name declared twice is an error."""
    found: dict[str, str] = {}
    for entry in query_files():
        parts = _NAME.split(entry.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise KeyError(f"query {name!r} is declared twice (again in {entry.name})")
            found[name] = body.strip()
    return found


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
