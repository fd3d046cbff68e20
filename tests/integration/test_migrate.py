"""Migrations: applied once, serialized, checksummed; the schema they leave behind."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumer import exceptions, migrate, queries
from tests import servers


@pytest.fixture
async def empty(pg_server: servers.PostgresServer) -> AsyncIterator[str]:
    await servers.create_database(pg_server.dsn(), "migrate_me")
    yield pg_server.dsn("migrate_me")
    await servers.drop_database(pg_server.dsn(), "migrate_me")


async def test_concurrent_migrations_apply_each_file_once(empty: str) -> None:
    conns = [await asyncpg.connect(empty) for _ in range(5)]
    try:
        results = await asyncio.gather(*(migrate.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, 0, len(queries.migrations())]
        versions = await conns[0].fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in versions] == [m.version for m in queries.migrations()]
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_applied_migration_is_an_error(
    empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(empty)
    try:
        await migrate.migrate(conn)
        edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited") for m in queries.migrations()]
        monkeypatch.setattr(queries, "migrations", lambda: edited)
        with pytest.raises(exceptions.MigrationError, match="edited after it was applied"):
            await migrate.migrate(conn)
    finally:
        await conn.close()


async def test_schema_is_partitioned_and_constrained(db: asyncpg.Connection) -> None:
    kind = await db.fetchval(
        "SELECT relkind::text FROM pg_class WHERE relname = 'conversation_history'"
    )
    assert kind == "p"
    for table in ("conversations", "archive_runs", "archive_dead_letters", "schema_migrations"):
        assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    await db.execute("SELECT archiver_ensure_partition(now())")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO conversation_history (tenant_id, conversation_id, timestamp, message_role,"
            " message_content, message_key, source_key) VALUES ('t', 'c', now(), 'robot', 'x', 'k', 's')"
        )


async def test_ensure_partition_is_safe_under_concurrency(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        names = await asyncio.gather(
            *(c.fetchval("SELECT archiver_ensure_partition('2031-05-17T12:00:00Z')") for c in conns)
        )
        assert set(names) == {"conversation_history_2031_05"}
    finally:
        for c in conns:
            await c.close()
