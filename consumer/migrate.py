"""Apply the numbered SQL files of sql/, once each, recorded with checksums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from consumer import exceptions, queries

Connection = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Plan:
    applied: tuple[queries.Migration, ...]
    pending: tuple[queries.Migration, ...]


def checksum(migration: queries.Migration) -> str:
    return hashlib.sha256(migration.sql.encode()).hexdigest()


async def plan(conn: Connection) -> Plan:
    """What is applied and what is pending; MigrationError if an applied file was edited."""
    rows = []
    if await conn.fetchval(queries.get("migrations_table_exists")):
        rows = await conn.fetch(queries.get("migrations_applied"))
    recorded = {row["version"]: row["checksum"] for row in rows}
    files = queries.migrations()
    for migration in files:
        if migration.version in recorded and recorded[migration.version] != checksum(migration):
            raise exceptions.MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql was edited after it was"
                " applied; restore it and add a new numbered migration instead"
            )
    unknown = sorted(set(recorded) - {m.version for m in files})
    if unknown:
        raise exceptions.MigrationError(
            f"the database has migrations this version does not know: {unknown}; upgrade the archiver"
        )
    applied = tuple(m for m in files if m.version in recorded)
    return Plan(applied, tuple(m for m in files if m.version not in recorded))


async def migrate(conn: Connection) -> list[queries.Migration]:
    """Apply every pending migration in one transaction under a blocking advisory lock."""
    async with conn.transaction():
        await conn.execute(queries.get("migrations_lock"))
        await conn.execute(queries.get("migrations_bootstrap"))
        pending = (await plan(conn)).pending
        for migration in pending:
            await conn.execute(migration.sql)
            await conn.execute(
                queries.get("migrations_record"),
                migration.version,
                migration.name,
                checksum(migration),
            )
    return list(pending)


async def ensure_current(conn: Connection) -> None:
    """Refuse to run against a database with pending migrations."""
    pending = (await plan(conn)).pending
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise exceptions.PendingMigrationsError(
            f"the database has {len(pending)} pending migration(s) ({names}):"
            " run `archiver migrate` first"
        )
