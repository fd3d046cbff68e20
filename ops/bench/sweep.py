"""Scenario `sweep`: one `archiver sweep` over N live checkpoint keys (+ shadows), none due,
while a separate client PINGs Redis every 10 ms."""

from __future__ import annotations

import asyncio
import re
import sys
import time

from . import probes, procs, profiles
from .common import Context, Result, redis_client

_REPORT = re.compile(r"found (\d+), archived (\d+) .*?shadows repaired (\d+), ([0-9.]+)s")


async def _pings(url: str, seconds: float) -> list[float]:
    pinger = probes.Pinger(url)
    pinger.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        rtts = pinger.finish()
    return rtts


async def _redis_stalls(url: str, reset: bool) -> dict[str, int]:
    """Redis's own latency monitor (events >= 1 ms): the longest of each kind, in ms."""
    async with redis_client(url) as client:
        if reset:
            await client.config_set("latency-monitor-threshold", 1)
            await client.latency_reset()
            return {}
        latest = await client.latency_latest()
    return {_text(row[0]): int(row[3]) for row in latest}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _profiled(ctx: Context, argv: list[str]) -> list[str]:
    """Under `py-spy record` when --profile is given."""
    if ctx.cfg.profile is None:
        return argv
    out = ctx.cfg.profile / "sweep.raw"
    out.parent.mkdir(parents=True, exist_ok=True)
    return [
        procs.py_spy(),
        "record",
        "--rate",
        "200",
        "--format",
        "raw",
        "-o",
        str(out),
        "--",
        *argv,
    ]


async def run(ctx: Context) -> Result:
    n = ctx.cfg.sweep_keys
    load_s = await ctx.ensure_background(n)
    dsn = await ctx.stack.fresh_database("sweep")
    env = ctx.env("sweep", dsn)  # production windows: ttl 24h, archive after 23h, sweep 1h
    log = ctx.folder("sweep") / "sweep.log"
    idle = await _pings(ctx.stack.redis_url, 1.0)
    await _redis_stalls(ctx.stack.redis_url, reset=True)
    pinger = probes.Pinger(ctx.stack.redis_url)
    pinger.start()
    started = time.monotonic()
    try:
        argv = _profiled(ctx, [sys.executable, "-m", "consumer", "sweep"])
        code = await procs.run_to_end(argv, env, log, within=900)
    finally:
        rtts = pinger.finish()
    wall = time.monotonic() - started
    if ctx.cfg.profile is not None:
        profiles.summarize(ctx.cfg.profile / "sweep.raw")
    stalls = await _redis_stalls(ctx.stack.redis_url, reset=False)
    match = _REPORT.search(log.read_text(errors="replace"))
    if code != 0 or match is None:
        raise RuntimeError(f"archiver sweep exited {code} without its report; see {log}")
    return {
        "keys": n,
        "found": int(match.group(1)),
        "archived": int(match.group(2)),
        "shadows_repaired": int(match.group(3)),
        "sweep_s": float(match.group(4)),
        "process_wall_s": round(wall, 2),
        "redis_ping_p99_ms": round(probes.percentile(rtts, 99), 2) if rtts else None,
        "redis_ping_ms": probes.summary(rtts, 2) | {"failures": pinger.failures},
        "redis_latency_monitor_max_ms": stalls,
        "idle_ping_p99_ms": round(probes.percentile(idle, 99), 2) if idle else None,
        "background_load_s": load_s,
    }
