"""The sweeper: SCAN, archive what could expire before the next sweep, repair shadows."""

from __future__ import annotations

import time

import asyncpg
import redis.asyncio as aioredis

from consumer import service, sweeper
from tests.conftest import sample
from tests.integration.test_archive import P, payload


async def test_sweep_archives_due_and_repairs_missing_shadows(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    now = time.time()
    due = P.key("due", now - 20)
    await redis.set(due, payload("due"), px=5_000)  # 5 s left: inside buffer + interval
    fresh = P.key("fresh", now)
    await redis.set(fresh, payload("fresh"), px=30_000)  # written by a producer without shadows
    old_persistent = P.key("persistent-old", now - 20)
    await redis.set(old_persistent, payload("persistent-old"))  # no TTL, older than ARCHIVE_AFTER
    young_persistent = P.key("persistent-young", now)
    await redis.set(young_persistent, payload("persistent-young"))
    await redis.set("unrelated:key", b"x")

    report = await parts.sweeper.sweep()

    assert report.ok and report.found == 4
    assert report.outcome.archived == 2 and report.shadows_repaired == 2
    assert await redis.exists(due, old_persistent) == 0
    layout = parts.archiver.redis.layout
    assert 0 < await redis.pttl(layout.shadow(fresh)) <= 15_000
    assert 0 < await redis.pttl(layout.shadow(young_persistent)) <= 15_000
    assert await redis.zscore(layout.deadlines, fresh) is not None
    assert (
        await db.fetchval("SELECT count(DISTINCT conversation_id) FROM conversation_history") == 2
    )
    run = await db.fetchrow("SELECT kind, status, found, archived FROM archive_runs")
    assert run is not None and dict(run) == {
        "kind": "sweep",
        "status": "ok",
        "found": 4,
        "archived": 2,
    }


async def test_only_one_sweep_runs_at_a_time(parts: service.Parts, redis: aioredis.Redis) -> None:
    await redis.set(parts.archiver.redis.layout.sweep_lock, "someone-else", px=10_000)
    report = await parts.sweeper.sweep()
    assert report.skipped and not report.ok


async def test_sweep_lock_is_released_after_a_sweep(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    await parts.sweeper.sweep()
    assert await redis.exists(parts.archiver.redis.layout.sweep_lock) == 0
    assert (await parts.sweeper.sweep()).ok


async def test_sweep_dead_letters_malformed_payloads(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = P.key("broken-2", time.time() - 20)
    await redis.set(key, sample("malformed_shape.txt"), px=3_000)
    report = await parts.sweeper.sweep()
    assert report.outcome.dead_letters == 1
    assert await db.fetchval("SELECT raw FROM archive_dead_letters") == sample(
        "malformed_shape.txt"
    )
    assert await redis.exists(key) == 0


async def test_sweep_leaves_keys_of_other_types_alone(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    key = P.key("hash-checkpoint", time.time() - 20)
    await redis.hset(key, "field", "value")
    await redis.pexpire(key, 3_000)
    report = await parts.sweeper.sweep()
    assert report.outcome.errors == 1 and not report.ok
    assert await redis.exists(key) == 1


async def test_in_run_mode_the_sweep_leaves_indexed_checkpoints_to_the_deadline_poller(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    soon = P.key("soon", time.time() - 10)
    await P.write(redis, soon, payload("soon"))  # shadow + index entry
    await redis.pexpire(soon, 20_000)  # inside buffer + interval (25 s), not due yet (15 s)
    lost_hints = P.key("lost-hints", time.time() - 10)
    await redis.set(lost_hints, payload("lost-hints"), px=20_000)  # no shadow, no index entry

    polled = sweeper.Sweeper(parts.archiver, parts.store, parts.settings, index_polled=True)
    report = await polled.sweep()
    assert report.outcome.archived == 1
    assert await redis.exists(soon) == 1  # the poller archives it when it comes due
    assert await redis.exists(lost_hints) == 0

    cron = await parts.sweeper.sweep()  # `archiver sweep`: nobody polls the index
    assert cron.outcome.archived == 1
    assert await redis.exists(soon) == 0


async def test_sweep_repairs_a_missing_index_entry(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    key = P.key("unindexed", time.time())
    await P.write(redis, key, payload("unindexed"))
    await redis.zrem(parts.archiver.redis.layout.deadlines, key)
    report = await parts.sweeper.sweep()
    assert report.shadows_repaired == 1  # counts shadows or index entries put back
    assert await redis.zscore(parts.archiver.redis.layout.deadlines, key) is not None
