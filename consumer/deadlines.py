"""The deadline index poller: Redis finds due keys late when many keys carry TTLs, so we look
up due checkpoints ourselves every few seconds and archive them (as Spring Session does)."""

from __future__ import annotations

import asyncio

import structlog

from consumer import checkpoints, hints, metrics
from consumer.settings import Settings

log = structlog.get_logger("consumer.deadlines")


class DeadlinePoller:
    def __init__(
        self, redis_side: checkpoints.Checkpoints, queue: hints.HintQueue, s: Settings
    ) -> None:
        self.redis = redis_side
        self.queue = queue
        self.every = s.deadline_poll
        self.limit = s.batch_size * max(1, s.workers)
        self.retry_after_ms = int(s.claim_ttl * 1000)

    async def run(self) -> None:
        while True:
            try:
                taken = await self.poll()
            except Exception as exc:  # Redis away: the listener reconnects, we just try again
                metrics.ERRORS.labels(stage="deadlines").inc()
                log.warning("deadlines.poll_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                taken = 0
            if taken < self.limit:
                await asyncio.sleep(self.every)

    async def poll(self) -> int:
        """Queue every due entry (waiting for room: backpressure, not drops); how many."""
        due, left = await self.redis.take_due(self.limit, self.retry_after_ms)
        metrics.DUE.set(left)
        for key in due:
            await self.queue.put(hints.Hint("archive", key))
        return len(due)
