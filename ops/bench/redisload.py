"""Put checkpoints into Redis fast: pipelines for the measured ones, a Lua loop for the
background population (what producer.py writes: checkpoint + shadow, with TTLs spread over
the last hours, + deadline-index entry)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from .workload import DEADLINES, PATTERN, SHADOW_PREFIX, shadow

BACKGROUND_PREFIX = PATTERN.split("{", 1)[0] + "bg-"
BACKGROUND_CHUNK = 5_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# ARGV: first, count, now_s, max_age_s, ttl_ms, archive_after_ms, key prefix, shadow prefix,
# deadline index, then the payloads to cycle through. A key written `age` s ago has ttl - age
# left, its shadow archive_after - age: as if agents had written them over the last hours.
_BACKGROUND_LUA = """
local first, count, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local span, ttl, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local values = #ARGV - 9
for i = first, first + count - 1 do
  local age = (i * 7919) % span
  local key = ARGV[7] .. i .. ':' .. (now - age)
  redis.call('SET', key, ARGV[10 + (i % values)], 'PX', ttl - age * 1000)
  redis.call('SET', ARGV[8] .. '{' .. key .. '}', '', 'PX', after - age * 1000)
  redis.call('ZADD', ARGV[9], (now - age) * 1000 + after, key)
end
return count
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One checkpoint to write: absolute expiry times in ms (None: none / not written)."""

    key: str
    value: bytes
    expire_at_ms: int
    shadow_at_ms: int | None = None
    deadline_ms: int | None = None


async def write(client: aioredis.Redis, entries: Sequence[Entry], chunk: int = 1_000) -> None:
    """SET checkpoint PXAT, SET shadow PXAT, ZADD deadline: pipelined, `chunk` per trip."""
    for start in range(0, len(entries), chunk):
        part = entries[start : start + chunk]
        async with client.pipeline(transaction=False) as pipe:
            for e in part:
                pipe.set(e.key, e.value, pxat=e.expire_at_ms)
                if e.shadow_at_ms is not None:
                    pipe.set(shadow(e.key), b"", pxat=e.shadow_at_ms)
            deadlines = {e.key: e.deadline_ms for e in part if e.deadline_ms is not None}
            if deadlines:
                pipe.zadd(DEADLINES, deadlines)
            await pipe.execute()


async def background(client: aioredis.Redis, count: int, payloads: Iterable[bytes]) -> float:
    """`count` live checkpoints with shadows and index entries, none due for hours; seconds."""
    started = time.monotonic()
    script = client.register_script(_BACKGROUND_LUA)
    values = list(payloads)
    now = int(time.time())
    max_age_s = 21 * 3600  # >= 3 h left on every checkpoint: no sweep window reaches them
    for first in range(0, count, BACKGROUND_CHUNK):
        n = min(BACKGROUND_CHUNK, count - first)
        argv: list[str | int | bytes] = [first, n, now, max_age_s, DAY_MS, DAY_MS - HOUR_MS]
        await script(keys=[], args=[*argv, BACKGROUND_PREFIX, SHADOW_PREFIX, DEADLINES, *values])
    return time.monotonic() - started


async def count_keys(client: aioredis.Redis) -> int:
    return int(await client.dbsize())
