"""Hints: what the listener and the deadline index hand to the batcher, through a bounded queue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from consumer import metrics

Kind = Literal["archive", "arm"]


@dataclass(frozen=True, slots=True)
class Hint:
    """Archive this checkpoint, or (re)arm its shadow; `received` is a monotonic time."""

    kind: Kind
    key: str
    received: float = field(default_factory=time.monotonic)


class HintQueue:
    """A bounded queue; the listener never waits on it (a full queue drops the hint)."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Hint] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, hint: Hint) -> bool:
        try:
            self.queue.put_nowait(hint)
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.HINTS_DROPPED.inc()
            return False
        metrics.BACKLOG.set(self.queue.qsize())
        return True

    async def put(self, hint: Hint) -> None:
        """For producers that may wait (the deadline poller): backpressure instead of drops."""
        await self.queue.put(hint)
        metrics.BACKLOG.set(self.queue.qsize())

    async def take(self, size: int, wait: float) -> list[Hint]:
        """At least one hint, then whatever arrives within `wait`, up to `size`."""
        batch = [await self.queue.get()]
        self._drain(batch, size)
        if len(batch) < size and wait > 0:
            await asyncio.sleep(wait)
            self._drain(batch, size)
        metrics.BACKLOG.set(self.queue.qsize())
        return batch

    def _drain(self, batch: list[Hint], size: int) -> None:
        while len(batch) < size:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return
