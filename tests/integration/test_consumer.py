"""The always-on consumer in-process: events, automatic shadows, the deadline index,
degraded mode and reconnects, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from consumer import migrate, producer, service
from consumer.settings import Settings
from tests import servers
from tests.conftest import MakeSettings
from tests.integration.test_archive import P, payload
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def running(s: Settings) -> AsyncIterator[service.Consumer]:
    """A consumer running in this event loop, started and its first sweep done."""
    async with service.connected(s) as parts:
        consumer = service.Consumer(parts)
        task = asyncio.create_task(consumer.run())

        async def ready() -> bool:
            if task.done():
                task.result()
            return consumer.state.last_sweep_ok_at is not None and consumer.state.mode != "starting"

        await eventually(ready, timeout=30, what="consumer ready")
        try:
            yield consumer
        finally:
            consumer.stopping.set()
            await asyncio.wait_for(task, timeout=15)


async def archived(db: asyncpg.Connection, conversation: str) -> bool:
    n = await db.fetchval(
        "SELECT count(*) FROM conversation_history WHERE conversation_id = $1", conversation
    )
    return bool(n)


async def test_expired_shadow_triggers_archiving(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    async with running(make_settings()) as consumer:
        assert consumer.state.mode == "events"
        key = P.key("by-event", time.time())
        layout = consumer.parts.archiver.redis.layout
        await redis.set(key, payload("by-event"), px=15_400)  # due: just over the 15 s buffer
        await redis.set(layout.shadow(key), b"", px=300)  # no deadline entry: events only
        await eventually(lambda: archived(db, "by-event"), timeout=20, what="archived by event")

        async def deleted() -> bool:  # the compare-and-delete follows the commit
            return await redis.exists(key) == 0

        await eventually(deleted, what="checkpoint deleted after the commit")


async def test_writes_without_shadows_get_one_from_their_ttl(
    make_settings: MakeSettings, redis: aioredis.Redis
) -> None:
    async with running(make_settings()) as consumer:
        key = P.key("no-shadow", time.time())
        shadow = consumer.parts.archiver.redis.layout.shadow(key)
        await redis.set(key, payload("no-shadow"), ex=30)

        async def armed() -> bool:
            return 14_000 < await redis.pttl(shadow) <= 15_000

        await eventually(armed, what="shadow armed from the checkpoint's TTL")
        await redis.expire(key, 29)  # a TTL change re-arms it too

        async def rearmed() -> bool:
            return 13_000 < await redis.pttl(shadow) <= 14_000

        await eventually(rearmed, what="shadow re-armed after EXPIRE")


async def test_full_queue_drops_hints_but_the_deadline_index_archives_everything(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    burst = producer.Producer(ttl=15.5, archive_after=0.3)
    async with running(make_settings(queue_size=5, batch_size=20)) as consumer:
        for i in range(150):
            await burst.write(redis, burst.key(f"burst-{i}"), payload(f"burst-{i}"))

        async def all_archived() -> bool:
            n = await db.fetchval(
                "SELECT count(DISTINCT conversation_id) FROM conversation_history"
            )
            return bool(n == 150)

        await eventually(all_archived, timeout=20, what="all 150 archived")
        assert consumer.queue.queue.maxsize == 5


async def test_reconnect_after_pubsub_kill_resubscribes_and_sweeps(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    async with running(make_settings()) as consumer:
        sweeps_before = await db.fetchval("SELECT count(*) FROM archive_runs WHERE kind = 'sweep'")
        missed = P.key("missed", time.time() - 20)
        await redis.set(missed, payload("missed"), px=5_000)  # due; its event would be lost
        await redis.client_kill_filter(_type="pubsub")

        async def resubscribed_and_swept() -> bool:
            n = await db.fetchval("SELECT count(*) FROM archive_runs WHERE kind = 'sweep'")
            return consumer.listener.connections >= 2 and n > sweeps_before

        await eventually(resubscribed_and_swept, what="resubscribed and swept")
        await eventually(lambda: archived(db, "missed"), what="missed checkpoint archived")
        assert consumer.state.subscribed


async def test_without_notifications_runs_degraded_on_index_and_sweeper(
    tmp_path: Path, make_settings: MakeSettings, db: asyncpg.Connection
) -> None:
    locked = servers.RedisServer(tmp_path / "locked", extra_config=['rename-command CONFIG ""'])
    with locked:
        s = make_settings(redis_url=locked.url, selftest_timeout="0.5s")
        client = aioredis.Redis.from_url(locked.url)
        try:
            async with running(s) as consumer:
                assert consumer.state.mode == "degraded"
                assert consumer.state.status() == "degraded"
                fast = producer.Producer(ttl=15.5, archive_after=0.3)
                await fast.write(client, fast.key("degraded"), payload("degraded"))
                await eventually(
                    lambda: archived(db, "degraded"), what="archived via deadline index"
                )
        finally:
            await client.aclose()


async def test_pending_migrations_refuse_to_start(
    make_settings: MakeSettings, pg_server: servers.PostgresServer
) -> None:
    await servers.create_database(pg_server.dsn(), "empty_db")
    try:
        s = make_settings(database_url=pg_server.dsn("empty_db"))
        from consumer import exceptions

        with pytest.raises(exceptions.PendingMigrationsError, match="archiver migrate"):
            async with service.connected(s):
                pass
    finally:
        await servers.drop_database(pg_server.dsn(), "empty_db")


async def test_starts_without_postgresql_and_holds_until_it_answers(
    tmp_path: Path, make_settings: MakeSettings, redis: aioredis.Redis
) -> None:
    pg = servers.PostgresServer(tmp_path / "pg")
    with pg:
        await servers.create_database(pg.dsn(), "archive")
        conn = await asyncpg.connect(pg.dsn("archive"))
        await migrate.migrate(conn)
        await conn.close()
        pg.stop()
        s = make_settings(database_url=pg.dsn("archive"), db_timeout="1s")
        async with service.connected(s) as parts:
            consumer = service.Consumer(parts)
            task = asyncio.create_task(consumer.run())
            key = P.key("outage", time.time() - 20)
            await redis.set(key, payload("outage"), px=3_000)  # would expire during the outage

            async def held() -> bool:
                return await redis.pttl(key) > 10_000

            await eventually(held, timeout=20, what="checkpoint held in Redis")
            pg.start()

            async def archived_now() -> bool:
                return await redis.exists(key) == 0

            await eventually(archived_now, timeout=30, what="archived once PostgreSQL is back")
            consumer.stopping.set()
            await asyncio.wait_for(task, timeout=15)
        conn = await asyncpg.connect(pg.dsn("archive"))
        try:
            assert await conn.fetchval("SELECT count(*) FROM conversation_history") == 4
        finally:
            await conn.close()


async def test_a_peers_recent_sweep_spares_ours_unless_a_reconnect_asks(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    consumer = service.Consumer(parts)
    await redis.set(parts.archiver.redis.layout.last_sweep, str(time.time() - 2))
    consumer.sweep_now.clear()
    pause = await consumer._sweep_round()
    assert parts.settings.sweep_interval - 3 < pause < parts.settings.sweep_interval - 1
    assert await db.fetchval("SELECT count(*) FROM archive_runs") == 0
    consumer.sweep_now.set()  # a reconnect: events were lost, sweep whatever peers did
    assert await consumer._sweep_round() == parts.settings.sweep_interval
    assert await db.fetchval("SELECT count(*) FROM archive_runs") == 1
