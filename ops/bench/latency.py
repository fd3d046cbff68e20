"""Scenario `latency`: checkpoints come due at a steady rate while N other live checkpoints
(+ shadows, TTLs of hours) sit in Redis; production windows (24 h TTL, 23 h archive-after).

Each checkpoint is written as producer.py writes it (checkpoint, shadow, deadline entry),
`lead` seconds before its due moment, which is recorded. After the archiver's start-up sweep
(over the whole population) has finished, the run measures, per checkpoint:

* due_to_archived_ms: archived_at (PostgreSQL now() = start of the archiving transaction,
  so a lower bound of the commit) minus the due moment;
* due_to_deleted_ms: the checkpoint's `del` event seen by the bench (the archiver deletes after
  its commit, so an upper bound of the commit) minus the due moment;
* archive_ms: the archiver's own `ms` of its `checkpoint.archived` log line: from the
  trigger's arrival in the process to after compare-and-delete (so commit included); the
  Prometheus histogram archiver_archive_latency_seconds (same interval, coarse buckets) too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import probes, procs, redisload
from .common import Context, Result, archived_so_far, pg_connection, redis_client
from .workload import PATTERN

BUFFER_MS = 3_600_000  # production: 24 h TTL - 23 h archive-after
PREFIX = PATTERN.split("{", 1)[0] + "lat-"
LATENCY = "archiver_archive_latency_seconds"


@dataclass(slots=True)
class Schedule:
    """Checkpoint i is due at t0 + i / rate and written `lead` before."""

    keys: list[str]
    payloads: list[bytes]
    t0_ms: float
    rate: float
    lead_ms: float
    max_lag_ms: float = 0.0

    def due_ms(self, i: int) -> float:
        return self.t0_ms + i * 1000 / self.rate

    def entry(self, i: int) -> redisload.Entry:
        due = int(self.due_ms(i))
        return redisload.Entry(self.keys[i], self.payloads[i], due + BUFFER_MS, due, due)


async def write_steadily(ctx: Context, plan: Schedule) -> None:
    """Write each checkpoint at its moment (due - lead), in small pipelines every ~5 ms."""
    total, i = len(plan.keys), 0
    async with redis_client(ctx.stack.redis_url) as client:
        while i < total:
            now = time.time() * 1000
            j = i
            while j < total and plan.due_ms(j) - plan.lead_ms <= now:
                j += 1
            if j > i:
                plan.max_lag_ms = max(plan.max_lag_ms, now - (plan.due_ms(i) - plan.lead_ms))
                await redisload.write(client, [plan.entry(k) for k in range(i, j)])
                i = j
            await asyncio.sleep(0.005)


def plan_for(ctx: Context) -> Schedule:
    cfg = ctx.cfg
    total = int(cfg.latency_rate * cfg.latency_seconds)
    data = ctx.gen.batch("lat", total, int(time.time()))
    lead_ms = cfg.latency_lead_s * 1000
    start = time.time() * 1000 + lead_ms + 500
    return Schedule(
        [c.key for c in data], [c.payload() for c in data], start, cfg.latency_rate, lead_ms
    )


async def first_sweep(dsn: str, archiver: procs.Archiver, within: float) -> float:
    """Wait for the archiver's start-up sweep to be recorded; its duration in s."""
    async with pg_connection(dsn) as conn:

        async def swept() -> bool:
            archiver.check_alive()
            return bool(
                await conn.fetchval("SELECT count(*) FROM archive_runs WHERE kind = 'sweep'")
            )

        await probes.wait_for(swept, within, "start-up sweep", every=0.5)
        details = await conn.fetchval(
            "SELECT details FROM archive_runs WHERE kind = 'sweep' LIMIT 1"
        )
    return float(orjson.loads(details).get("duration_s", 0.0))


async def run(ctx: Context) -> Result:
    load_s = await ctx.ensure_background(ctx.cfg.background)
    dsn = await ctx.stack.fresh_database("latency")
    log = ctx.folder("latency") / "archiver.log"
    watcher = probes.DelWatcher(ctx.stack.redis_url, PREFIX)
    async with procs.archiver_run(ctx.env("latency", dsn), log) as archiver:
        sweep_s = await first_sweep(dsn, archiver, within=900)
        await watcher.start()
        meter = ctx.cpu_meter(archiver)
        try:
            plan = plan_for(ctx)
            meter.start()
            await write_steadily(ctx, plan)
            await _drain(archiver, len(plan.keys), within=ctx.cfg.latency_lead_s + 180)
            cpu = meter.stop()
            metrics = await archiver.metrics()
        finally:
            await watcher.close()
    result = await _collect(dsn, plan, watcher.seen, log, metrics)
    return result | {
        "background_load_s": load_s,
        "startup_sweep_s": round(sweep_s, 2),
        "cpu": cpu
        | {
            "archiver_cpu_us_per_checkpoint": round(
                cpu["archiver_cpu_s"] * 1e6 / max(1, result["checkpoints"]), 1
            )
        },
        "archiver_stop_s": archiver.stop_s,
    }


async def _drain(archiver: procs.Archiver, total: int, within: float) -> None:
    async def done() -> bool:
        return await archived_so_far(archiver) >= total

    await probes.wait_for(done, within, f"{total} due checkpoints archived")


async def _collect(
    dsn: str, plan: Schedule, deleted: dict[str, float], log: Path, metrics: dict[str, float]
) -> Result:
    due = {key: plan.due_ms(i) for i, key in enumerate(plan.keys)}
    async with pg_connection(dsn) as conn:
        rows = await conn.fetch(
            "SELECT source_key, extract(epoch FROM min(archived_at)) AS at"
            " FROM conversation_history GROUP BY source_key"
        )
    archived = [
        float(r["at"]) * 1000 - due[r["source_key"]] for r in rows if r["source_key"] in due
    ]
    gone = [at * 1000 - due[key] for key, at in deleted.items() if key in due]
    return {
        "rate": plan.rate,
        "seconds": len(plan.keys) / plan.rate,
        "checkpoints": len(plan.keys),
        "archived": len(archived),
        "writer_max_lag_ms": round(plan.max_lag_ms, 1),
        "due_to_archived_ms": probes.summary(archived),
        "due_to_deleted_ms": probes.summary(gone),
        "archive_ms": _archive_ms(log, due),
        "archive_ms_histogram": _from_histogram(metrics),
    }


def _archive_ms(log: Path, due: dict[str, float]) -> Result:
    events = probes.log_events(log, "checkpoint.archived")
    values = [float(e["ms"]) for e in events if e.get("key") in due]
    return probes.summary(values) | {"source": "archiver log `checkpoint.archived` ms (exact)"}


def _from_histogram(metrics: dict[str, float]) -> Result:
    buckets = probes.histogram(metrics, LATENCY)
    total = buckets[-1][1] if buckets else 0.0
    within = next((count for bound, count in buckets if bound == 0.25), 0.0)
    p50, p99 = (probes.bucket_quantile(buckets, q) for q in (0.5, 0.99))
    return {
        "p50": None if p50 is None else round(p50 * 1000, 1),
        "p99": None if p99 is None else round(p99 * 1000, 1),
        "share_within_250ms": round(within / total, 4) if total else None,
        "count": int(total),
        "source": f"{LATENCY} buckets, interpolated (coarse)",
    }
