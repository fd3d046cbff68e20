from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from consumer.hints import Hint, HintQueue


def dropped_total() -> float:
    return REGISTRY.get_sample_value("archiver_hints_dropped_total") or 0.0


def hints(n: int) -> list[Hint]:
    return [Hint("archive", f"k{i}") for i in range(n)]


def test_offer_accepts_until_full() -> None:
    queue = HintQueue(3)
    assert [queue.offer(h) for h in hints(3)] == [True, True, True]
    assert queue.dropped == 0
    assert queue.queue.qsize() == 3


def test_offer_on_a_full_queue_drops_counts_and_returns_at_once() -> None:
    queue = HintQueue(2)
    for h in hints(2):
        queue.offer(h)
    before = dropped_total()
    assert queue.offer(Hint("arm", "late-1")) is False
    assert queue.offer(Hint("arm", "late-2")) is False
    assert queue.dropped == 2
    assert dropped_total() == before + 2
    assert [queue.queue.get_nowait().key for _ in range(2)] == ["k0", "k1"]


async def test_take_returns_at_most_size_in_order() -> None:
    queue = HintQueue(10)
    for h in hints(5):
        queue.offer(h)
    batch = await queue.take(3, wait=0)
    assert [h.key for h in batch] == ["k0", "k1", "k2"]
    assert queue.queue.qsize() == 2


async def test_take_returns_what_there_is_without_waiting_when_wait_is_zero() -> None:
    queue = HintQueue(10)
    for h in hints(2):
        queue.offer(h)
    assert [h.key for h in await queue.take(100, wait=0)] == ["k0", "k1"]


async def test_take_waits_for_at_least_one_hint() -> None:
    queue = HintQueue(10)
    asyncio.get_running_loop().call_soon(queue.offer, Hint("archive", "first"))
    batch = await queue.take(5, wait=0)
    assert [h.key for h in batch] == ["first"]


async def test_take_collects_hints_arriving_within_wait() -> None:
    queue = HintQueue(10)
    queue.offer(Hint("archive", "now"))
    asyncio.get_running_loop().call_soon(queue.offer, Hint("archive", "soon"))
    batch = await queue.take(5, wait=0.001)
    assert [h.key for h in batch] == ["now", "soon"]


async def test_put_waits_for_room_instead_of_dropping() -> None:
    queue = HintQueue(1)
    queue.offer(Hint("arm", "a"))
    blocked = asyncio.create_task(queue.put(Hint("arm", "b")))
    first = await queue.take(1, wait=0)
    await blocked
    second = await queue.take(1, wait=0)
    assert [first[0].key, second[0].key] == ["a", "b"]
    assert queue.dropped == 0


def test_hints_are_stamped_with_the_monotonic_receive_time() -> None:
    before = time.monotonic()
    hint = Hint("arm", "a")
    assert before <= hint.received <= time.monotonic()
