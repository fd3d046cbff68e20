"""Consumers' heartbeats in Redis: renewed with a TTL, aged on Redis's clock, pruned once gone,
and written and read with nothing beyond the archiver's ACL (ops/redis-acl.conf)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from consumer import health, heartbeat, keys
from tests.waiting import eventually

LAYOUT = keys.layout_from("langgraph:checkpoint:{conversation_id}:{timestamp}", "archiver:shadow:")


def state(**changes: object) -> health.State:
    s = health.State(sweep_interval=3600, mode="events", subscribed=True, redis_ok=True,
                     database_ok=True, last_sweep_ok_at=None)  # fmt: skip
    for name, value in changes.items():
        setattr(s, name, value)
    return s


@pytest.fixture
async def archiver_user(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client logged in as the ACL user of ops/redis-acl.conf (conftest's `redis_url`)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_renewed_heartbeat_is_read_with_its_age_on_redis_clock(
    archiver_user: aioredis.Redis, redis: aioredis.Redis
) -> None:
    beat = heartbeat.Heartbeat(archiver_user, LAYOUT, every_s=10)
    await beat.renew(state())
    assert not beat.failing
    member = f"{socket.gethostname()}:{os.getpid()}"
    key = f"archiver:heartbeat:{member}"
    assert 0 < await redis.pttl(key) <= 30_000
    found = await heartbeat.read(archiver_user, LAYOUT)
    assert [b.member for b in found] == [member]
    assert 0 <= found[0].age_s < 30
    assert found[0].healthy
    shown = found[0].as_dict()
    assert shown["consumer"] == member
    assert (shown["status"], shown["mode"], shown["pid"]) == ("healthy", "events", os.getpid())


async def test_an_unhealthy_consumer_is_alive_but_not_healthy(redis: aioredis.Redis) -> None:
    await heartbeat.Heartbeat(redis, LAYOUT, every_s=10).renew(state(database_ok=False))
    (found,) = await heartbeat.read(redis, LAYOUT)
    assert not found.healthy
    assert found.state["problems"] == ["PostgreSQL unreachable"]


async def test_a_stopped_consumer_disappears_and_is_pruned_from_the_index(
    archiver_user: aioredis.Redis, redis: aioredis.Redis
) -> None:
    gone = heartbeat.Heartbeat(archiver_user, LAYOUT, every_s=0.1)  # TTL 300 ms
    gone.member = "old-host:1"
    await gone.renew(state())

    async def expired() -> bool:
        return await heartbeat.read(archiver_user, LAYOUT) == []

    await eventually(expired, what="the stopped consumer's heartbeat to expire")
    assert await redis.zrange(LAYOUT.heartbeats, 0, -1) == [b"old-host:1"]
    await heartbeat.Heartbeat(archiver_user, LAYOUT, every_s=10).renew(state())
    members = await redis.zrange(LAYOUT.heartbeats, 0, -1)
    assert members == [f"{socket.gethostname()}:{os.getpid()}".encode()]


async def test_renewing_never_raises_when_redis_is_down() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    beat = heartbeat.Heartbeat(client, LAYOUT, every_s=10)
    await beat.renew(state())
    assert beat.failing
    await client.aclose()


async def test_garbage_under_a_heartbeat_key_is_skipped(redis: aioredis.Redis) -> None:
    await redis.zadd(LAYOUT.heartbeats, {"x:1": 0, "y:2": 0})
    await redis.set(LAYOUT.heartbeat("x:1"), b"not json", px=10_000)
    await redis.set(LAYOUT.heartbeat("y:2"), b"{}", px=10_000)
    assert await heartbeat.read(redis, LAYOUT) == []
