"""Scenario `memory`: N shadows expire within a few seconds; the consumer's peak RSS, and
whether every checkpoint was archived before its (original) TTL.

Written as producer.py writes them (checkpoint, shadow, deadline entry), with scaled windows:
the checkpoint expires `buffer` s after its shadow. Default queue size (20,000 hints): the
events the queue cannot hold are dropped and the deadline index must cover them. As in
`throughput`, notifications are `Ex` only, so that loading raises no `set` events.
"""

from __future__ import annotations

import contextlib
import time

from . import probes, procs, redisload
from .common import Context, Result, archived_so_far, pg_connection, redis_client

DROPPED = "archiver_hints_dropped_total"


def payloads(ctx: Context) -> list[tuple[str, bytes]]:
    made = ctx.gen.batch("mem", ctx.cfg.memory_n, int(time.time()))
    return [(c.key, c.payload()) for c in made]


def entries(ctx: Context, data: list[tuple[str, bytes]], t0_ms: int) -> list[redisload.Entry]:
    """Shadows expiring evenly over the spread from t0; checkpoints `buffer` s later."""
    spread_ms, buffer_ms = ctx.cfg.memory_spread_s * 1000, int(ctx.cfg.memory_buffer_s * 1000)
    found = []
    for i, (key, value) in enumerate(data):
        at = t0_ms + int(i * spread_ms / len(data))
        found.append(redisload.Entry(key, value, at + buffer_ms, at, at))
    return found


async def run(ctx: Context) -> Result:
    cfg = ctx.cfg
    buffer_s = cfg.memory_buffer_s
    await ctx.reset_redis(notify="Ex")
    dsn = await ctx.stack.fresh_database("memory")
    env = ctx.env(
        "memory", dsn, checkpoint_ttl=f"{2 * buffer_s}s", archive_after=f"{buffer_s}s",
        sweep_interval=f"{buffer_s}s", configure_notifications="false",
    )  # fmt: skip
    log = ctx.folder("memory") / "archiver.log"
    async with procs.archiver_run(env, log) as archiver:
        before = archiver.status()
        made = payloads(ctx)
        t0_ms = int(time.time() * 1000) + 2000 + int(cfg.memory_n * 0.12)
        data = entries(ctx, made, t0_ms)
        async with redis_client(ctx.stack.redis_url) as client:
            await redisload.write(client, data)
        timed_out = await _wait(archiver, data)
        after = archiver.status()
        dropped = (await archiver.metrics()).get(DROPPED, 0.0)
    verdict = await _verdict(dsn, data)
    return verdict | {
        "checkpoints": cfg.memory_n,
        "spread_s": cfg.memory_spread_s,
        "buffer_s": buffer_s,
        "peak_rss_mb": round(after["VmHWM"] / 1024, 1),
        "rss_before_mb": round(before["VmRSS"] / 1024, 1),
        "rss_end_mb": round(after["VmRSS"] / 1024, 1),
        "hints_dropped": int(dropped),
        "timed_out": timed_out,
        "archiver_stop_s": archiver.stop_s,
    }


async def _wait(archiver: procs.Archiver, data: list[redisload.Entry]) -> bool:
    """Until all are archived or the last original TTL has passed (+5 s); True if the latter."""
    last_expiry = max(e.expire_at_ms for e in data) / 1000
    within = max(1.0, last_expiry + 5 - time.time())

    async def done() -> bool:
        return await archived_so_far(archiver) >= len(data)

    with contextlib.suppress(TimeoutError):
        await probes.wait_for(done, within, "burst archived", every=0.5)
        return False
    return True


async def _verdict(dsn: str, data: list[redisload.Entry]) -> Result:
    expiry = {e.key: e.expire_at_ms / 1000 for e in data}
    async with pg_connection(dsn) as conn:
        rows = await conn.fetch(
            "SELECT source_key, extract(epoch FROM min(archived_at)) AS at"
            " FROM conversation_history GROUP BY source_key"
        )
    archived = {r["source_key"]: float(r["at"]) for r in rows if r["source_key"] in expiry}
    late = sum(1 for key, at in archived.items() if at >= expiry[key])
    missing = len(expiry) - len(archived)
    return {
        "all_archived_before_ttl": missing == 0 and late == 0,
        "archived": len(archived),
        "missing": missing,
        "archived_after_original_ttl": late,
    }
