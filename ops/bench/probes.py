"""Observers that run beside the archiver: a Redis pinger, a `del` event watcher, log readers,
and the arithmetic of percentiles (exact, and estimated from Prometheus buckets)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from consumer.demo import display


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """p50/p99/max (and count, mean), rounded; nulls when there are no values."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    return {
        "p50": round(percentile(values, 50), digits),
        "p99": round(percentile(values, 99), digits),
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
        "count": len(values),
    }


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Quantile (0..1) from cumulative (upper bound, count) pairs, interpolated linearly as
    Prometheus' histogram_quantile does; None without observations."""
    return display.quantile(list(buckets), q)


def histogram(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """The cumulative buckets of a Prometheus histogram from parsed /metrics."""
    prefix = f'{name}_bucket{{le="'
    found = []
    for sample, value in metrics.items():
        if sample.startswith(prefix):
            found.append((float(sample[len(prefix) : -2]), value))
    return sorted(found)


def log_events(path: Path, event: str) -> Iterator[dict[str, Any]]:
    """The JSON log lines of one event name (other lines are skipped)."""
    needle = f'"{event}"'.encode()
    with path.open("rb") as lines:
        for line in lines:
            if needle in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    parsed = orjson.loads(line)
                    if isinstance(parsed, dict) and parsed.get("event") == event:
                        yield parsed


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds used by named groups of processes between `start` and `stop`."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self.before: dict[int, float] = {}
        self.started = 0.0

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for pids in self.groups().values() for pid in pids}
        self.started = time.monotonic()

    def _used(self, pid: int) -> float:
        now = cpu_seconds(pid)  # 0 for a process gone meanwhile: its share is lost
        return max(0.0, now - self.before.get(pid, 0.0)) if now else 0.0

    def stop(self) -> dict[str, float]:
        used = {name: sum(self._used(pid) for pid in pids) for name, pids in self.groups().items()}
        wall = time.monotonic() - self.started
        return {name: round(s, 1) for name, s in used.items()} | {"wall_s": round(wall, 1)}


class Pinger(threading.Thread):
    """PING Redis from a thread of its own every `interval` s; round trips in ms."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__(name="bench-pinger", daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=30)
        self.interval = interval
        self.rtts_ms: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.perf_counter()
            try:
                self.client.ping()
            except redis.RedisError:
                self.failures += 1
            else:
                self.rtts_ms.append((time.perf_counter() - started) * 1000)
            self._halt.wait(self.interval)

    def finish(self) -> list[float]:
        self._halt.set()
        self.join(timeout=35)
        self.client.close()
        return self.rtts_ms


class DelWatcher:
    """When each key was deleted (its `del` keyevent, needs the `g` flag): an upper bound of
    the commit, since the archiver deletes only after PostgreSQL committed."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.prefix = prefix
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe("__keyevent@0__:del")
        self._task = asyncio.create_task(self._read(pubsub))

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                key = message["data"].decode()
                if key.startswith(self.prefix):
                    self.seen.setdefault(key, time.time())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.25
) -> float:
    """Poll `check` until true; the monotonic time it became true. TimeoutError after `within` s."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {within:.0f}s")
        await asyncio.sleep(every)
    return time.monotonic()
