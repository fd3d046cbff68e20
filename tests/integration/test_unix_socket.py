"""A Redis reached over a unix socket (`unix://` URL): the consumer subscribes and archives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests import servers
from tests.conftest import MakeSettings
from tests.integration.test_archive import P, payload
from tests.integration.test_consumer import archived, running
from tests.waiting import eventually


@pytest.fixture(scope="module")
def unix_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("redis-unix")
    sock = Path(workdir) / "redis.sock"
    with servers.RedisServer(workdir, extra_config=[f"unixsocket {sock}", "unixsocketperm 700"]):
        yield f"unix://{sock}?db=0"


async def test_consumer_archives_through_a_unix_socket(
    unix_redis: str, make_settings: MakeSettings, db: asyncpg.Connection
) -> None:
    client = aioredis.Redis.from_url(unix_redis)
    await client.flushall()
    async with running(make_settings(redis_url=unix_redis)) as consumer:
        assert consumer.state.mode == "events" and consumer.state.subscribed
        key = P.key("over-unix", time.time() - 20)
        await client.set(key, payload("over-unix"), px=5_000)  # due: the event path takes it
        await eventually(lambda: archived(db, "over-unix"), timeout=20, what="archived via unix")
    await client.aclose()
