"""The simulated workload against a real Redis: shadows for some producers, plain SETs with a
TTL for the others, one key per checkpoint, and a tally of what it wrote."""

from __future__ import annotations

import redis.asyncio as aioredis

from consumer import producer
from consumer.demo import workload


async def test_workload_writes_every_checkpoint_with_or_without_a_shadow(
    redis: aioredis.Redis,
) -> None:
    writer = producer.Producer(ttl=30, archive_after=15)
    plan = workload.Plan(conversations=4, max_checkpoints=2, spread=0.2, gap=(0.0, 0.1))
    work = workload.Workload(plan, redis, writer)
    await work.run()

    tally = work.tally
    assert tally.finished
    assert tally.written == tally.planned == len(set(tally.keys))
    assert tally.planned == sum(s.checkpoints for s in work.scripts)
    assert await redis.exists(*tally.keys) == tally.written
    shadowless = {s.conversation_id for s in work.scripts if s.shadowless}
    for key in tally.keys:
        info = writer.layout.parse(key)
        assert info is not None
        has_shadow = await redis.exists(writer.layout.shadow(key))
        assert has_shadow == (info.conversation_id not in shadowless)
        assert 25_000 < await redis.pttl(key) <= 30_000
    assert await redis.zcard(writer.layout.deadlines) == tally.written - tally.shadowless
    assert tally.shadowless == sum(s.checkpoints for s in work.scripts if s.shadowless) > 0
    assert len(tally.malformed_keys) == 1  # conversation 3 writes one malformed checkpoint
