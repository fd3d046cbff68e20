"""PostgreSQL failing for reasons of its own (a lock held by maintenance, a full disk, a
read-only server during a failover) holds checkpoints in Redis and retries them: none is
ever dead-lettered for it. Only data PostgreSQL refuses (SQLSTATE 22, 23, 54) dead-letters."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from consumer import model, service
from ops.disk import TmpfsTablespace
from tests import servers
from tests.conftest import MakeSettings
from tests.integration.test_archive import NOW_DUE, P, payload
from tests.waiting import eventually


async def _write(redis: aioredis.Redis, conversations: list[str]) -> list[str]:
    keys_ = []
    for name in conversations:
        key = P.key(name, time.time())
        await P.write(redis, key, payload(name))
        keys_.append(key)
    return keys_


async def _archive_until_archived(parts: service.Parts, keys_: list[str]) -> model.BatchOutcome:
    """Retry as the deadline index would: held keys stay claimed for a back-off first."""
    total = model.BatchOutcome()

    async def all_archived() -> bool:
        total.add(await parts.archiver.archive(keys_, NOW_DUE))
        return total.archived >= len(keys_)

    await eventually(all_archived, timeout=15.0, what="held checkpoints archived")
    return total


async def _no_dead_letters(db: asyncpg.Connection) -> None:
    assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 0


@contextlib.asynccontextmanager
async def _table_locked(admin_database_url: str) -> AsyncIterator[None]:
    """Maintenance holding a lock the archive path needs (as a long ALTER or VACUUM FULL would)."""
    holder = await asyncpg.connect(admin_database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE conversations IN EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def test_a_lock_timeout_holds_the_batch_and_dead_letters_nothing(
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    admin_database_url: str,
) -> None:
    name = admin_database_url.rsplit("/", 1)[1]
    await db.execute(
        f"ALTER ROLE {servers.PG_WRITER} IN DATABASE {name} SET lock_timeout = '200ms'"
    )
    keys_ = await _write(redis, ["locked-1", "locked-2", "locked-3"])
    async with service.connected(make_settings()) as parts:
        async with _table_locked(admin_database_url):
            started = time.monotonic()
            outcome = await parts.archiver.archive(keys_, NOW_DUE)
            assert time.monotonic() - started < 3.0, "the lock_timeout, not the command timeout"

        assert (outcome.held, outcome.dead_letters, outcome.archived) == (3, 0, 0)
        await _no_dead_letters(db)
        assert await redis.exists(*keys_) == 3
        assert (await _archive_until_archived(parts, keys_)).dead_letters == 0
    await _no_dead_letters(db)


async def test_a_full_disk_holds_the_batch_and_dead_letters_nothing(
    parts: service.Parts,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    pg_server: servers.PostgresServer,
) -> None:
    """A real full volume: the month's partition lives in a tablespace on a 1 MB tmpfs."""
    space = f"full_{uuid.uuid4().hex[:8]}"
    keys_ = await _write(redis, ["full-1", "full-2", "full-3"])
    with TmpfsTablespace(pg_server, space, 1024 * 1024) as disk:
        await db.execute(f"CREATE TABLESPACE {space} LOCATION '{disk.location}'")
        try:
            await db.execute(f"GRANT CREATE ON TABLESPACE {space} TO {servers.PG_OWNER}")
            await db.execute(f"SET default_tablespace = {space}")
            partition = await db.fetchval("SELECT archiver_ensure_partition('2026-11-21Z')")
            assert disk.fill() > 0

            outcome = await parts.archiver.archive(keys_, NOW_DUE)
            assert (outcome.held, outcome.dead_letters, outcome.archived) == (3, 0, 0)
            await _no_dead_letters(db)
            assert await redis.exists(*keys_) == 3

            disk.free()
            assert (await _archive_until_archived(parts, keys_)).dead_letters == 0
            await _no_dead_letters(db)
        finally:
            await db.execute(f"DROP TABLE IF EXISTS {partition}")
            await db.execute(f"DROP TABLESPACE {space}")


async def test_a_read_only_database_at_start_is_waited_for_not_fatal(
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    admin_database_url: str,
) -> None:
    """A failover in progress: the address answers, but read-only. `archiver run` starts,
    holds what comes due, and archives it once the server takes writes again."""
    name = admin_database_url.rsplit("/", 1)[1]
    await db.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    keys_ = await _write(redis, ["failover-1", "failover-2"])
    async with service.connected(make_settings()) as parts:
        outcome = await parts.archiver.archive(keys_, NOW_DUE)
        assert (outcome.held, outcome.dead_letters) == (2, 0)

        await db.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        assert (await _archive_until_archived(parts, keys_)).archived == 2
    await _no_dead_letters(db)


@pytest.mark.parametrize("writes", [1, 3])
async def test_a_value_postgresql_refuses_is_dead_lettered_alone(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection, writes: int
) -> None:
    """Data errors still bisect down to the one checkpoint PostgreSQL refuses."""
    good = await _write(redis, [f"fine-{i}" for i in range(writes)])
    await db.execute(
        "ALTER TABLE conversation_history ADD CONSTRAINT no_boom"
        " CHECK (message_content <> 'message 1' OR conversation_id <> 'boom')"
    )
    (bad,) = await _write(redis, ["boom"])
    outcome = await parts.archiver.archive([*good, bad], NOW_DUE)
    assert (outcome.archived, outcome.dead_letters, outcome.held) == (writes, 1, 0)
    assert await db.fetchval("SELECT source_key FROM archive_dead_letters") == bad
