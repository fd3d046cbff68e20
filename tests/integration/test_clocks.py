"""Time comes from Redis, never from this host's clock: a hold or a claim never shortens a TTL,
ARCHIVER_MAX_HOLD counts from the first hold on Redis's clock, checkpoints without a TTL come
due by Redis's clock, and a peer's sweep stamp from the future silences no sweep."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg
import pytest
import redis.asyncio as aioredis
import structlog

from consumer import model, service
from tests.conftest import MakeSettings
from tests.integration.test_archive import NOW_DUE, P, payload

HOUR = 3600.0


@pytest.fixture
def database_down(parts: service.Parts) -> None:
    take_down(parts)


def take_down(parts: service.Parts) -> None:
    async def down(
        batch: Sequence[model.Checkpoint],
        dead: Sequence[model.DeadLetter],
        resolved: Sequence[int] = (),
    ) -> dict[str, int]:
        raise ConnectionRefusedError("database down")

    parts.store.write = down  # type: ignore[method-assign]


@pytest.fixture(params=[+3 * HOUR, -3 * HOUR], ids=["ahead", "behind"])
def skewed_host(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """This host's wall clock 3 h off Redis's (monotonic time is untouched)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + request.param)


async def redis_now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


@pytest.mark.usefixtures("database_down")
async def test_a_hold_never_shortens_a_long_ttl_whatever_the_key_says(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    """An agent rewrote a long-lived key: its name's time is 31 h old, its TTL 10 min."""
    key = P.key("long-lived", time.time() - 31 * HOUR)
    await redis.set(key, payload("long-lived"), px=600_000)
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.held == 1
    assert await redis.pttl(key) > 590_000


@pytest.mark.usefixtures("skewed_host")
async def test_a_hold_on_a_skewed_host_extends_by_redis_clock(
    make_settings: MakeSettings, redis: aioredis.Redis
) -> None:
    s = make_settings(claim_ttl="2s")  # the claim keeps it 4 s; the hold, buffer + interval
    async with service.connected(s) as parts:
        take_down(parts)
        key = P.key("skewed", time.time())
        await redis.set(key, payload("skewed"), px=1_000)  # due, about to expire
        outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.held == 1
    extend_ms = (s.buffer + s.sweep_interval) * 1000
    assert extend_ms - 2_000 < await redis.pttl(key) <= extend_ms


@pytest.mark.usefixtures("database_down")
async def test_max_hold_counts_from_the_first_hold_by_redis_clock(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    key = P.key("held-long", time.time())
    await redis.set(key, payload("held-long"), px=1_000)
    layout = parts.archiver.redis.layout
    s = parts.settings
    span_ms = int((s.buffer + s.max_hold) * 1000)
    first_hold = await redis_now_ms(redis) - span_ms - 1_000  # held since longer than allowed
    await redis.set(layout.held(key), first_hold)
    with structlog.testing.capture_logs() as logged:
        outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.held == 1
    assert 0 < await redis.pttl(key) <= 1_000  # neither the claim nor the hold extended it
    assert "checkpoint.hold_exhausted" in [e["event"] for e in logged]


async def test_finish_removes_the_hold_mark(
    parts: service.Parts, redis: aioredis.Redis, database_url: str
) -> None:
    key = P.key("recovered", time.time())
    await redis.set(key, payload("recovered"), px=1_000)
    layout = parts.archiver.redis.layout
    await redis.set(layout.held(key), await redis_now_ms(redis))
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.archived == 1
    assert await redis.exists(key, layout.held(key)) == 0


@pytest.mark.usefixtures("skewed_host")
async def test_a_checkpoint_without_ttl_is_due_by_redis_clock(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    """Not archived while agents may still use it, not left behind once old enough."""
    now = (await redis_now_ms(redis)) / 1000
    young = P.key("persistent-young", now - 1)
    old = P.key("persistent-old", now - parts.settings.archive_after - 5)
    await redis.set(young, payload("persistent-young"))
    await redis.set(old, payload("persistent-old"))
    report = await parts.sweeper.sweep()
    assert report.outcome.archived == 1
    assert await redis.exists(young) == 1 and await redis.exists(old) == 0
    shadow_ms = await redis.pttl(parts.archiver.redis.layout.shadow(young))
    assert 0 < shadow_ms <= parts.settings.archive_after * 1000


@pytest.mark.usefixtures("skewed_host")
async def test_the_deadline_index_runs_on_redis_clock(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    checkpoints = parts.archiver.redis
    await checkpoints.schedule({"due-now": 0, "due-later": 60_000})
    taken, left = await checkpoints.take_due(10, 5_000)
    assert (taken, left) == (["due-now"], 0)
    retry_at = await redis.zscore(checkpoints.layout.deadlines, "due-now")
    assert retry_at is not None and abs(retry_at - (await redis_now_ms(redis) + 5_000)) < 2_000


async def test_a_peer_sweep_stamp_from_the_future_is_ignored(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    """A replica whose clock ran an hour ahead wrote the stamp: it must not silence sweeps."""
    ahead = (await redis_now_ms(redis)) / 1000 + HOUR
    await redis.set(parts.archiver.redis.layout.last_sweep, f"{ahead:.6f}")
    consumer = service.Consumer(parts)
    consumer.sweep_now.clear()
    await consumer._sweep_round()
    assert await db.fetchval("SELECT count(*) FROM archive_runs WHERE kind = 'sweep'") == 1
    last = consumer.state.last_sweep_ok_at
    assert last is not None and last <= time.time()


@pytest.mark.usefixtures("skewed_host")
async def test_sweep_stamps_come_from_redis_clock(
    parts: service.Parts, redis: aioredis.Redis
) -> None:
    await parts.sweeper.sweep()
    stamp = float(await redis.get(parts.archiver.redis.layout.last_sweep) or 0)
    assert abs(stamp - (await redis_now_ms(redis)) / 1000) < 5
    age = await parts.archiver.redis.sweep_age()
    assert age is not None and age < 5
