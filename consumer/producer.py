"""For agents: write a checkpoint together with its shadow and deadline, atomically.

Producers that do not use this helper are covered too: the consumer arms shadows from the
checkpoint's TTL when it sees the write, and the sweeper repairs any shadow still missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from consumer import keys

DEFAULT_PATTERN = "langgraph:checkpoint:{conversation_id}:{timestamp}"


@dataclass(frozen=True, slots=True)
class Producer:
    """Key layout and windows; match the consumer's ARCHIVER_* settings."""

    ttl: float = 86400.0
    archive_after: float = 82800.0
    pattern: str = DEFAULT_PATTERN
    shadow_prefix: str = "archiver:shadow:"

    @property
    def layout(self) -> keys.Layout:
        return keys.layout_from(self.pattern, self.shadow_prefix)

    def key(self, conversation_id: str, written_at: float | None = None) -> str:
        ts = int(written_at if written_at is not None else time.time())
        return self.pattern.format(conversation_id=conversation_id, timestamp=ts)

    def _commands(self, key: str) -> tuple[str, int, int, float]:
        ttl_ms = int(self.ttl * 1000)
        shadow_ms = int(self.archive_after * 1000)
        return self.layout.shadow(key), ttl_ms, shadow_ms, time.time() * 1000 + shadow_ms

    async def write(self, client: aioredis.Redis, key: str, value: bytes | str) -> None:
        """SET checkpoint PX ttl + SET shadow PX archive_after + index the deadline, in MULTI."""
        shadow, ttl_ms, shadow_ms, due = self._commands(key)
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, value, px=ttl_ms)
            pipe.set(shadow, b"", px=shadow_ms)
            pipe.zadd(self.layout.deadlines, {key: due})
            await pipe.execute()

    def write_sync(self, client: redis.Redis, key: str, value: bytes | str) -> None:
        """The same for synchronous agents."""
        shadow, ttl_ms, shadow_ms, due = self._commands(key)
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key, value, px=ttl_ms)
            pipe.set(shadow, b"", px=shadow_ms)
            pipe.zadd(self.layout.deadlines, {key: due})
            pipe.execute()
