"""What every scenario gets: the configuration, the servers, a work folder and the data."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from consumer.demo import embedded as servers

from . import probes, procs, redisload
from .config import Config
from .stack import Stack
from .workload import Conversation, Generator

ARCHIVED = "archiver_checkpoints_archived_total"
DEAD = "archiver_dead_letters_total"


@dataclass(slots=True)
class Context:
    cfg: Config
    stack: Stack
    workdir: Path
    gen: Generator
    conversations: list[Conversation] = field(default_factory=list)
    background_loaded: int = 0
    throughput_ckpt_per_s: float | None = None
    floor_ckpt_per_s: float | None = None

    def folder(self, scenario: str) -> Path:
        path = self.workdir / scenario
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, scenario: str, database_url: str, **settings: object) -> dict[str, str]:
        return procs.archiver_env(
            self.stack.redis_url, database_url, self.folder(scenario), **settings
        )

    def throughput_data(self) -> list[Conversation]:
        """The throughput scenario's conversations (made once; naive reuses them)."""
        if len(self.conversations) < self.cfg.throughput_n:
            self.conversations = self.gen.batch("tp", self.cfg.throughput_n, int(time.time()))
        return self.conversations

    async def ensure_background(self, count: int) -> float | None:
        """Redis holding exactly `count` background checkpoints (+ shadows); load seconds."""
        if self.background_loaded == count:
            return None
        await self.stack.reset_redis(notify="")
        payloads = [c.payload() for c in self.gen.batch("bgp", 16, int(time.time()))]
        async with redis_client(self.stack.redis_url) as client:
            took = await redisload.background(client, count, payloads)
        self.background_loaded = count
        return round(took, 2)

    def cpu_meter(self, archiver: procs.Archiver | None) -> probes.CpuMeter:
        """CPU of the archiver, Redis and every PostgreSQL process (backends come and go)."""

        def groups() -> dict[str, list[int]]:
            pg = self.stack.pg.pid
            found = {
                "redis_cpu_s": [self.stack.redis.pid],
                "postgres_cpu_s": [pg, *servers.descendants(pg)],
            }
            return found | ({"archiver_cpu_s": [archiver.pid]} if archiver else {})

        return probes.CpuMeter(groups)

    async def reset_redis(self, notify: str) -> None:
        self.background_loaded = 0
        await self.stack.reset_redis(notify)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def pg_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def archived_so_far(archiver: procs.Archiver) -> int:
    """Checkpoints the archiver finished (archived or dead-lettered), from its /metrics."""
    archiver.check_alive()
    metrics = await archiver.metrics()
    return int(metrics.get(ARCHIVED, 0) + metrics.get(DEAD, 0))


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


Result = dict[str, Any]
