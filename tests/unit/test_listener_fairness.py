"""A burst of buffered events must not starve the workers: redis-py hands buffered pub/sub
replies back without suspending, so the listener itself has to yield."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumer import codecs, health, hints, listener
from consumer.keys import Layout
from consumer.settings import Settings
from consumer.sources import seed_json

SHADOW = "archiver:shadow:"
CHECKPOINT = "langgraph:checkpoint:{conversation_id}:{timestamp}"
BURST = 1_000


class BurstOver(Exception):
    """Ends the listener's loop once the buffered burst has been read."""


class BufferedPubSub:
    """A subscription whose replies are all buffered: get_message never suspends."""

    def __init__(self, count: int) -> None:
        channel = b"__keyevent@0__:expired"
        self.replies = [
            {"type": "message", "channel": channel, "data": f"{SHADOW}{{c-{i}:1}}".encode()}
            for i in range(count)
        ]

    async def get_message(self, **options: Any) -> dict[str, Any]:
        if not self.replies:
            raise BurstOver
        return self.replies.pop()

    async def ping(self) -> None:
        return None


class QuietClient:
    """Answers the self-test's commands; the probe event never comes."""

    async def set(self, *args: Any, **kwargs: Any) -> bool:
        return True

    async def exists(self, *keys: Any) -> int:
        return 0


async def test_workers_run_while_a_burst_of_events_is_read() -> None:
    queue = hints.HintQueue(BURST)
    layout = Layout(CHECKPOINT, SHADOW)
    source = seed_json.SeedJson(layout, codecs.CodecOptions())
    events = listener.Listener(Settings(), layout, source, queue, health.State(60.0), lambda: None)
    seen_by_worker: list[int] = []

    async def worker() -> None:
        while True:
            seen_by_worker.append(queue.queue.qsize())
            await asyncio.sleep(0)

    running = asyncio.create_task(worker())
    with pytest.raises(BurstOver):
        await events._consume(QuietClient(), BufferedPubSub(BURST))  # type: ignore[arg-type]
    tasks = [t for t in (running, events._probe_task) if t is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    assert queue.queue.qsize() == BURST  # every event became a hint
    during = [n for n in seen_by_worker if 0 < n < BURST]
    assert len(during) >= 5  # the worker ran again and again while the burst was read
