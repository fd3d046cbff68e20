"""The keyevent subscriber: light by design. It turns events into hints and never blocks.

Expired shadows become archive hints; writes and TTL changes of checkpoint keys become arm
hints (shadows for producers that know nothing of them). A self-test proves delivery; a ping
proves the subscription is alive (redis-py has missed dead pub/sub connections before).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from consumer import checkpoints, connection, health, hints, keys, metrics, notifications, sources
from consumer.settings import Settings

log = structlog.get_logger("consumer.listener")

CONNECTION_ERRORS = (RedisError, OSError, TimeoutError)
REPROBE_S = 60.0  # while degraded: has someone enabled notifications?
REVERIFY_S = 300.0  # while on events: has someone disabled them?
# A burst of events is parsed from buffered replies without suspending: let the workers run
# (claim, write) every so many events, so that PostgreSQL starts on the burst at once.
YIELD_EVERY = 100


class SubscriptionLost(RedisError):
    """The subscription stopped answering pings."""


class Listener:
    def __init__(
        self,
        settings: Settings,
        layout: keys.Layout,
        source: sources.Source,
        queue: hints.HintQueue,
        state: health.State,
        on_reconnect: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.source = source
        self.queue = queue
        self.state = state
        self.on_reconnect = on_reconnect
        self.probe_seen = asyncio.Event()
        self.probe_key = ""
        self.connections = 0
        self._probe_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Subscribe and consume forever, reconnecting with backoff."""
        while True:
            client = connection.from_url(
                self.settings.redis_url,
                socket_connect_timeout=self.settings.redis_timeout,
                socket_timeout=self.settings.redis_timeout,
                encoding_errors=checkpoints.ENCODING_ERRORS,
            )
            pubsub = None
            try:
                pubsub = await self._subscribe_with_retry(client)
                await self._consume(client, pubsub)
            except CONNECTION_ERRORS as exc:
                self._lost(exc)
            finally:
                await self._close(client, pubsub)

    async def _close(self, client: aioredis.Redis, pubsub: Any) -> None:
        """Stop the self-test and close both connections (also when cancelled)."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        if pubsub is not None:
            await pubsub.aclose()
        await client.aclose()

    def _lost(self, exc: BaseException) -> None:
        self.state.subscribed = False
        metrics.SUBSCRIBED.set(0)
        log.warning("subscription.lost", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _subscribe_with_retry(self, client: aioredis.Redis) -> Any:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(CONNECTION_ERRORS),
            wait=wait_exponential(multiplier=0.5, max=30),
            before_sleep=lambda rs: log.warning(
                "subscription.retry",
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception() if rs.outcome else ""),
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._subscribe(client)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _subscribe(self, client: aioredis.Redis) -> Any:
        await notifications.ensure_flags(
            client, self.settings.configure_notifications, self.source.notify_flags
        )
        await notifications.check_eviction(client)
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(
            *(keys.keyevent_channel(db, e) for e in ("expired", *self.source.write_events))
        )
        self.connections += 1
        self.state.subscribed = True
        metrics.SUBSCRIBED.set(1)
        log.info("subscription.started", db=db, connection=self.connections)
        if self.connections > 1:
            self.on_reconnect()
        return pubsub

    async def _consume(self, client: aioredis.Redis, pubsub: Any) -> None:
        ping_every = self.settings.ping_interval
        silent_limit = 2 * ping_every + self.settings.redis_timeout
        last_heard = last_ping = time.monotonic()
        probe_due = time.monotonic()
        burst = 0
        while True:
            if time.monotonic() >= probe_due:
                pause = REVERIFY_S if self.state.mode == "events" else REPROBE_S
                probe_due = time.monotonic() + pause
                self._probe_task = asyncio.create_task(self._self_test(client))
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message.get("type") == "message":
                    self._route(message)
                burst += 1
                if burst % YIELD_EVERY == 0:  # buffered replies never suspend get_message
                    await asyncio.sleep(0)
            if now - last_ping >= ping_every:
                last_ping = now
                await pubsub.ping()
            if now - last_heard > silent_limit:
                raise SubscriptionLost(f"no reply on the subscription for {silent_limit:.0f}s")

    def _route(self, message: dict[str, Any]) -> None:
        event = _text(message["channel"]).rsplit(":", 1)[-1]
        key = _text(message["data"])
        _events_counter(event).inc()
        if event == "expired":
            self._expired(key)
        elif self.source.is_checkpoint(key):
            self.queue.offer(hints.Hint("arm", key))

    def _expired(self, key: str) -> None:
        checkpoint = self.layout.checkpoint_of_shadow(key)
        if checkpoint is not None:
            self.queue.offer(hints.Hint("archive", checkpoint))
        elif key == self.probe_key:
            self.probe_seen.set()

    async def _self_test(self, client: aioredis.Redis) -> None:
        """Prove that `expired` events reach us: a probe key with a short TTL must report."""
        self.probe_seen.clear()
        self.probe_key = self.layout.probe(uuid.uuid4().hex)
        try:
            await client.set(self.probe_key, "1", px=20)
            ok = await self._await_probe(client)
        except CONNECTION_ERRORS:
            return
        previous, self.state.mode = self.state.mode, "events" if ok else "degraded"
        metrics.DEGRADED.set(0 if ok else 1)
        if ok and previous != "events":
            log.info("notifications.verified", mode="events")
        elif not ok and previous != "degraded":
            log.error(
                "notifications.unavailable", mode="degraded",
                detail=f"no expired event arrived: enable notify-keyspace-events"
                f" '{self.source.notify_flags}' in Redis (provider settings on managed Redis);"
                " running on the deadline index + sweeper",
            )  # fmt: skip

    async def _await_probe(self, client: aioredis.Redis) -> bool:
        deadline = time.monotonic() + self.settings.selftest_timeout
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.probe_seen.wait(), timeout=0.05)
                return True
            except TimeoutError:
                # Accessing an expired key deletes it and fires its event at once.
                await client.exists(self.probe_key)
        return False


@functools.cache
def _events_counter(event: str) -> Any:
    return metrics.EVENTS.labels(event=event)


_text = checkpoints.text
