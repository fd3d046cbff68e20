"""Heartbeats: every running consumer renews a key in Redis, so health is visible from anywhere.

`archiver run` writes `archiver:heartbeat:<host>:<pid>` (its health summary as JSON) every
health interval with a TTL of three intervals, and indexes it in the sorted set
`archiver:heartbeats`. Freshness is Redis's clock alone: the value records the TTL it was
written with, and its age is that TTL less what PTTL says is left; a consumer that stops
renewing disappears when its key expires, and the next renewal by any consumer prunes the
index. Commands used: SET, ZADD, ZRANGEBYSCORE, EXISTS, ZREM (writer); ZRANGEBYSCORE, GET,
PTTL (readers): all within the archiver's ACL (ops/redis-acl.conf).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
import structlog

from consumer import __version__, health, keys

log = structlog.get_logger("consumer.heartbeat")

TTL_INTERVALS = 3
RENEW_TIMEOUT_S = 5.0
_SHOWN = ("status", "mode", "problems", "started_at", "last_successful_sweep_at", "subscribed",
          "checkpoints_archived", "messages_archived", "dead_letters", "errors")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Beat:
    """A live consumer as its heartbeat shows it; `age_s` on Redis's clock."""

    member: str
    age_s: float
    state: dict[str, Any]

    @property
    def healthy(self) -> bool:
        """Alive and not reporting itself unhealthy."""
        return self.state.get("status") != "unhealthy"

    def as_dict(self) -> dict[str, Any]:
        return {"consumer": self.member, "age_s": round(self.age_s, 3)} | self.state


class Heartbeat:
    """The running consumer's own heartbeat."""

    def __init__(self, client: aioredis.Redis, layout: keys.Layout, every_s: float) -> None:
        self.client = client
        self.layout = layout
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.ttl_ms = int(every_s * TTL_INTERVALS * 1000)
        self.failing = False

    async def renew(self, state: health.State) -> None:
        """Write the heartbeat and prune expired ones; never raises (logged once per outage)."""
        try:
            await asyncio.wait_for(self._write(state), timeout=RENEW_TIMEOUT_S)
        except Exception as exc:
            if not self.failing:
                log.warning("heartbeat.not_written", error=f"{type(exc).__name__}: {exc}"[:300])
            self.failing = True
        else:
            self.failing = False

    async def _write(self, state: health.State) -> None:
        snapshot = state.snapshot()
        value = {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__,
                 "ttl_ms": self.ttl_ms} | {name: snapshot.get(name) for name in _SHOWN}  # fmt: skip
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.layout.heartbeat(self.member), orjson.dumps(value), px=self.ttl_ms)
            pipe.zadd(self.layout.heartbeats, {self.member: 0})
            await pipe.execute()
        await _prune(self.client, self.layout)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _members(client: aioredis.Redis, layout: keys.Layout) -> list[str]:
    found = await client.zrangebyscore(layout.heartbeats, "-inf", "+inf")
    return [_text(cast(bytes | str, m)) for m in found]


async def _prune(client: aioredis.Redis, layout: keys.Layout) -> None:
    members = await _members(client, layout)
    async with client.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.exists(layout.heartbeat(member))
        alive = await pipe.execute()
    gone = [m for m, exists in zip(members, alive, strict=True) if not exists]
    if gone:
        await client.zrem(layout.heartbeats, *gone)


async def read(client: aioredis.Redis, layout: keys.Layout) -> list[Beat]:
    """The consumers whose heartbeat is alive, freshest first."""
    members = await _members(client, layout)
    async with client.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.get(layout.heartbeat(member))
            pipe.pttl(layout.heartbeat(member))
        replies = await pipe.execute()
    beats = [
        beat
        for member, raw, left in zip(members, replies[::2], replies[1::2], strict=True)
        if (beat := _beat(member, raw, left)) is not None
    ]
    return sorted(beats, key=lambda b: (b.age_s, b.member))


def _beat(member: str, raw: bytes | None, left_ms: int) -> Beat | None:
    if raw is None or left_ms < 0:
        return None
    try:
        state = orjson.loads(raw)
        age_ms = int(state["ttl_ms"]) - left_ms
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return Beat(member, max(0, age_ms) / 1000, state if isinstance(state, dict) else {})
