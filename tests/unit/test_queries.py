from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumer import queries

CONSUMER = Path(queries.__file__).resolve().parent
MIGRATION_FILE = re.compile(r"^\d{4}_\w+\.sql$")


def declared_names() -> list[str]:
    """Every `-- name:` line of the query files, duplicates included."""
    names: list[str] = []
    for entry in queries.query_files():
        text = entry.read_text(encoding="utf-8")
        names += re.findall(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return names


def used_names() -> set[str]:
    """Every queries.get("...") in the consumer package."""
    found: set[str] = set()
    for source in CONSUMER.rglob("*.py"):
        found |= set(re.findall(r"queries\.get\(\s*\"(\w+)\"", source.read_text("utf-8")))
    return found


def test_query_names_are_unique() -> None:
    names = declared_names()
    assert names
    assert len(names) == len(set(names))


def test_every_declared_query_loads_with_a_body() -> None:
    named = queries.named()
    assert sorted(named) == sorted(declared_names())
    for name, body in named.items():
        assert body, name
        assert "-- name:" not in body, name


@pytest.mark.parametrize("name", sorted(used_names()))
def test_every_query_the_code_uses_exists(name: str) -> None:
    assert queries.get(name).strip()


def test_the_code_uses_queries() -> None:
    assert len(used_names()) >= 10


def test_unknown_query_raises_key_error() -> None:
    with pytest.raises(KeyError):
        queries.get("no_such_query")


def test_query_blocks_do_not_swallow_the_file_header() -> None:
    first = next(iter(queries.named().values()))
    assert not first.startswith("-- Runtime queries")


# Numbers reserved by changes developed in parallel: each lands on its own.
RESERVED = frozenset({5, 6, 7, 9})


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in queries.migrations()]
    expected = [v for v in range(1, max(versions) + 1) if v not in RESERVED or v in versions]
    assert versions == expected


def test_every_sql_file_but_queries_is_a_well_named_migration() -> None:
    """A misnamed migration would be skipped silently; every .sql file must match."""
    files = sorted(e.name for e in queries.sql_dir().iterdir() if e.name.endswith(".sql"))
    migrations = [f for f in files if not re.match(r"^queries(_\w+)?\.sql$", f)]
    assert migrations
    assert all(MIGRATION_FILE.match(f) for f in migrations), migrations
    loaded = [f"{m.version:04d}_{m.name}.sql" for m in queries.migrations()]
    assert loaded == migrations


def test_migrations_have_sql() -> None:
    for migration in queries.migrations():
        assert migration.sql.strip(), migration.name
        assert migration.name
