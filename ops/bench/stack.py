"""The private servers of a benchmark run: one Redis, one PostgreSQL, a migrated template.

Like the test suite (tests/servers.py): free ports, their own directories, never the system
servers on 6379/5432. Leaving the `with` block stops both, also on errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from consumer.demo import embedded as servers

TEMPLATE = "bench_template"
# As the project's redis.conf for production, less persistence (the tests' servers have none).
REDIS_CONFIG = (
    "maxmemory-policy noeviction",
    "hz 10",
    "dynamic-hz yes",
    "client-output-buffer-limit pubsub 64mb 16mb 90",
)


@dataclass(slots=True)
class Stack:
    """Running servers and the databases made on them."""

    redis: servers.RedisServer
    pg: servers.PostgresServer
    databases: list[str] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    async def fresh_database(self, name: str) -> str:
        """A new database cloned from the migrated template; its DSN."""
        db = f"bench_{name}"
        await servers.drop_database(self.pg.dsn(), db)
        await servers.create_database(self.pg.dsn(), db, template=TEMPLATE, owner=servers.PG_OWNER)
        self.databases.append(db)
        return self.pg.dsn(db)

    def owner_dsn(self, dsn: str) -> str:
        """The same database as its owner (the migrations' role)."""
        return self.pg.dsn(dsn.rsplit("/", 1)[1], user=servers.PG_OWNER)

    async def reset_redis(self, notify: str) -> None:
        """Empty Redis and set its keyspace notifications (the archiver may add flags)."""
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            await client.flushall(asynchronous=True)  # a million keys: freed in the background
            await client.config_set("notify-keyspace-events", notify)
        finally:
            await client.aclose()


def pg_settings(fsync: bool) -> dict[str, str]:
    """fsync on by default: commits then cost what they cost in production."""
    if not fsync:
        return {}
    return {"fsync": "on", "full_page_writes": "on"}


@contextlib.contextmanager
def started(workdir: Path, fsync: bool) -> Iterator[Stack]:
    """Start Redis and PostgreSQL (migrated template included); stop both on leaving."""
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(
            servers.RedisServer(workdir / "redis", extra_config=REDIS_CONFIG)
        )
        pg = stack.enter_context(
            servers.PostgresServer(workdir / "pg", settings=pg_settings(fsync))
        )
        asyncio.run(servers.create_migrated_database(pg, TEMPLATE))
        yield Stack(redis, pg)
