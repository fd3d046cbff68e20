"""Scenario `throughput`: N due checkpoints archived through the event path by one
`archiver run`, then the same rows loaded by a bare COPY + INSERT ... ON CONFLICT (the floor).

The checkpoints and shadows are written while the archiver runs, with the shadows set to
expire together at T0 (PXAT) and the checkpoints 0.5 s past the buffer after that: due. No
deadline-index entries, so only `expired` events trigger archiving. Keyspace notifications are
set to `Ex` beforehand and ARCHIVER_CONFIGURE_NOTIFICATIONS=false, so that the writes themselves
raise no `set` events (in production they happen hours before the burst).
"""

from __future__ import annotations

import time

from . import floor, probes, procs, profiles, redisload
from .common import Context, Result, archived_so_far, pg_connection, ratio, redis_client, rounded
from .workload import Conversation

BUFFER_S = 300
WINDOWS = {
    "checkpoint_ttl": f"{2 * BUFFER_S}s",
    "archive_after": f"{BUFFER_S}s",
    "sweep_interval": f"{BUFFER_S}s",
    "configure_notifications": "false",
}
_FINAL = """
SELECT count(*) AS rows, count(DISTINCT source_key) AS checkpoints,
       extract(epoch FROM max(archived_at)) AS last_at, extract(epoch FROM min(archived_at)) AS first_at
FROM conversation_history
"""


def entries(payloads: list[tuple[str, bytes]], t0_ms: int) -> list[redisload.Entry]:
    expire_ms = t0_ms + BUFFER_S * 1000 + 500
    return [redisload.Entry(key, value, expire_ms, t0_ms) for key, value in payloads]


def start_moment(n: int) -> int:
    """T0 in ms: after the load (about 0.1 ms per checkpoint on a busy 2-core machine)."""
    return int(time.time() * 1000) + 1500 + int(n * 0.12)


async def run(ctx: Context) -> Result:
    n = ctx.cfg.throughput_n
    conversations = ctx.throughput_data()
    dsn = await ctx.stack.fresh_database("throughput")
    await ctx.reset_redis(notify="Ex")
    env = ctx.env("throughput", dsn, queue_size=max(20_000, n + 1_000), **WINDOWS)
    log = ctx.folder("throughput") / "archiver.log"
    payloads = [(c.key, c.payload()) for c in conversations]
    before = await _floor_run(ctx, conversations, "floor_before")
    async with procs.archiver_run(env, log) as archiver:
        t0_ms = start_moment(n)
        data = entries(payloads, t0_ms)
        async with redis_client(ctx.stack.redis_url) as client:
            await redisload.write(client, data)
        loaded_ms = time.time() * 1000
        meter = ctx.cpu_meter(archiver)
        meter.start()
        profile = ctx.cfg.profile / "throughput.raw" if ctx.cfg.profile else None
        async with procs.profiled(archiver.pid, profile):
            await _wait_archived(archiver, n)
        cpu = meter.stop()
    if profile is not None:
        profiles.summarize(profile)
    result = await _measure(dsn, t0_ms, n, ctx.cfg.messages)
    result["load_overran_ms"] = max(0, round(loaded_ms - t0_ms))
    result["queue_size"] = max(20_000, n + 1_000)
    result["profiled"] = profile is not None
    result["cpu"] = cpu | _per_unit(cpu, n, n * ctx.cfg.messages)
    result["archiver_stop_s"] = archiver.stop_s
    ctx.throughput_ckpt_per_s = result["ckpt_per_s"]
    after = await _floor_run(ctx, conversations, "floor_after")
    result |= _floor(before, after, result["msgs_per_s"])
    ctx.floor_ckpt_per_s = result["floor_rows_per_s"] / ctx.cfg.messages
    return result


def _per_unit(cpu: dict[str, float], checkpoints: int, rows: int) -> dict[str, float]:
    """CPU per unit of work: steadier than rates on a shared machine."""
    return {
        "archiver_cpu_us_per_checkpoint": round(cpu["archiver_cpu_s"] * 1e6 / checkpoints, 1),
        "postgres_cpu_us_per_row": round(cpu["postgres_cpu_s"] * 1e6 / rows, 1),
        "redis_cpu_us_per_checkpoint": round(cpu["redis_cpu_s"] * 1e6 / checkpoints, 1),
    }


# Polled 4 times a second, serving /metrics took 3% of the archiver's profile samples here
# (Prometheus scrapes every 15 s or so). The rate comes from PostgreSQL's archived_at, so
# polling once a second only delays noticing the end.
POLL_S = 1.0


async def _wait_archived(archiver: procs.Archiver, n: int) -> None:
    async def done() -> bool:
        return await archived_so_far(archiver) >= n

    within = max(120.0, n / 100)
    await probes.wait_for(done, within=within, what=f"{n} checkpoints archived", every=POLL_S)


async def _measure(dsn: str, t0_ms: int, n: int, messages: int) -> Result:
    async with pg_connection(dsn) as conn:
        row = await conn.fetchrow(_FINAL)
    assert row is not None
    elapsed = float(row["last_at"]) - t0_ms / 1000
    return {
        "checkpoints": n,
        "archived_checkpoints": row["checkpoints"],
        "rows": row["rows"],
        "expected_rows": n * messages,
        "elapsed_s": round(elapsed, 3),
        "ckpt_per_s": rounded(row["checkpoints"] / elapsed),
        "msgs_per_s": rounded(row["rows"] / elapsed),
        "measured": "first shadow expiry (PXAT T0) -> max(archived_at) (start of the last transaction)",
    }


async def _floor_run(ctx: Context, conversations: list[Conversation], name: str) -> Result:
    dsn = await ctx.stack.fresh_database(name)
    cfg = ctx.cfg
    meter = ctx.cpu_meter(None)
    return await floor.run(dsn, conversations, cfg.floor_batch, cfg.floor_connections, meter)


def _floor(before: Result, after: Result, msgs_per_s: float | None) -> Result:
    """The floor ran before and after the archiver: their mean is the reference."""
    mean = round((before["rows_per_s"] + after["rows_per_s"]) / 2, 1)
    return {
        "floor_rows_per_s": mean,
        "floor": {"before": before, "after": after},
        "ratio_vs_floor": ratio(msgs_per_s, mean),
    }
