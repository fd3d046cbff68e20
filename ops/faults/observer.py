"""A keyevent observer: which checkpoint keys *expired* (rather than being deleted by the
archiver after archiving them). A checkpoint that expires was not archived in time.

It never configures notifications itself (that is the consumer's job, also after a Redis
restart), reconnects when killed, and so only sees what Redis publishes while it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consumer import keys


class Observer:
    def __init__(self, url: str, layout: keys.Layout) -> None:
        self.url = url
        self.layout = layout
        self.expired: set[str] = set()
        self.reconnects = 0

    async def run(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
            try:
                await self._listen(client)
            except (RedisError, OSError, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await client.aclose()

    async def _listen(self, client: aioredis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe("__keyevent@0__:expired")
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._note(message)
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await pubsub.aclose()

    def _note(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        key = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        if self.layout.is_checkpoint(key):
            self.expired.add(key)
