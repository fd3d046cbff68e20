"""Scenario `retention`: N rows of history over 12 months and 5 tenants with different
policies; how fast retention removes what they let go, and what it does to archiving.

One database, seeded by COPY (ops/seed.py). Policies: 7, 30 and 90 days for three tenants,
270 days for a fourth, the 180-day default for the fifth: months older than 270 days go as
whole partitions, the rest in batches per tenant. `archiver run` (periodic jobs off) archives
checkpoints coming due at a steady rate from start to end, production windows, written as
producer.py writes them. Three windows, one after the other, each measuring the archiver's
`archive_ms` (its `checkpoint.archived` log line) for the checkpoints due in it:

* baseline: nothing else runs;
* reference: one bare `DELETE` of a tenant's month that no policy touches (the way not to do
  it: one statement, all rows at once), timed: its rows/s is the reference for the batches;
* retention: `archiver retention apply` (the one-shot, same code and lease as the job),
  whose report gives the drop and batch phases' durations and rows.

The seeded archive is vacuumed, analyzed and checkpointed before the first window, as an
archive grown over a year would be: otherwise the baseline measures autovacuum's first pass
over the freshly loaded rows and the checkpoint writing them out. Meanwhile a sampler reads
PostgreSQL's WAL position and counts autovacuum workers at work every half second, so each
window also says how much WAL was written (MB/s) and how much autovacuum ran in it
(worker-seconds): the two things besides CPU that an archiver's commits wait behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from consumer import partitions, policies
from ops import seed

from . import latency, probes, procs, redisload, workload
from .common import Context, Result, pg_connection, redis_client

TENANTS = ("privacy", "support", "sales", "regulated", "other")
KEEP_DAYS: dict[str | None, int] = {"privacy": 7, "support": 30, "sales": 90,
                                    "regulated": 270, None: 180}  # fmt: skip
MONTHS = 12
PREFIX = workload.PATTERN.split("{", 1)[0] + "ret-"
LEAD_MS = 2_000  # a checkpoint is written this long before it is due
TICK_S = 0.005
SETTLE_S = 2.0
REFERENCE_SQL = """
DELETE FROM conversation_history
WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3
"""


@dataclass(slots=True)
class Writer:
    """Checkpoints coming due at `rate`/s from t0 until stopped; each key's due moment."""

    ctx: Context
    rate: float
    t0_ms: float = field(default_factory=lambda: time.time() * 1000 + LEAD_MS + 500)
    due: dict[str, float] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    max_lag_ms: float = 0.0

    def due_ms(self, i: int) -> float:
        return self.t0_ms + i * 1000 / self.rate

    async def run(self) -> None:
        i = 0
        async with redis_client(self.ctx.stack.redis_url) as client:
            while not self.stop.is_set():
                now = time.time() * 1000
                j = i
                while self.due_ms(j) - LEAD_MS <= now:
                    j += 1
                if j > i:
                    self.max_lag_ms = max(self.max_lag_ms, now - (self.due_ms(i) - LEAD_MS))
                    await redisload.write(client, [self._entry(k) for k in range(i, j)])
                    i = j
                await asyncio.sleep(TICK_S)

    def _entry(self, i: int) -> redisload.Entry:
        conversation = self.ctx.gen.conversation(f"ret-{i}", int(time.time()))
        due = int(self.due_ms(i))
        key = PREFIX + f"{i}:{conversation.written_ts}"
        self.due[key] = due
        return redisload.Entry(key, conversation.payload(), due + latency.BUFFER_MS, due, due)

    def window(self, start_ms: float, end_ms: float) -> set[str]:
        return {key for key, due in self.due.items() if start_ms <= due < end_ms}


async def run(ctx: Context) -> Result:
    cfg = ctx.cfg
    await ctx.reset_redis(notify="")
    dsn = await ctx.stack.fresh_database("retention")
    loaded, load_s, origin = await _seed(dsn, cfg.retention_rows)
    env = ctx.env("retention", dsn, run_jobs="false")
    log = ctx.folder("retention") / "archiver.log"
    writer = Writer(ctx, cfg.retention_rate)
    sampler = Sampler(dsn)
    async with procs.archiver_run(env, log) as archiver:
        task = asyncio.create_task(writer.run())
        sampling = asyncio.create_task(sampler.run())
        try:
            windows = await _windows(ctx, dsn, writer, origin)
        finally:
            writer.stop.set()
            sampler.stop.set()
            await task
            await sampling
        await _drain(archiver, dsn, len(writer.due))
    report = windows.pop("report")
    windows |= _phases(ctx.folder("retention") / "apply.log", windows["retention"])
    return _result(cfg, loaded, load_s, writer, windows, report, log) | {
        "database_by_window": {
            name: sampler.within(*bounds) for name, bounds in windows.items()
            if isinstance(bounds, tuple)
        },
    }  # fmt: skip


SAMPLE_SQL = """
SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_bytes,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker') AS vacuums
"""
SAMPLE_S = 0.5


@dataclass(slots=True)
class Sampler:
    """PostgreSQL's WAL position and its autovacuum workers at work, every SAMPLE_S."""

    dsn: str
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # ms, bytes, workers
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with pg_connection(self.dsn) as conn:
            while not self.stop.is_set():
                row = await conn.fetchrow(SAMPLE_SQL)
                if row is not None:
                    now = time.time() * 1000
                    self.samples.append((now, int(row["wal_bytes"]), row["vacuums"]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), SAMPLE_S)

    def within(self, start_ms: float, end_ms: float) -> Result:
        """WAL written (MB/s) and autovacuum worker-seconds between two moments."""
        inside = [x for x in self.samples if start_ms <= x[0] <= end_ms]
        if len(inside) < 2:
            return {"wal_mb_per_s": None, "autovacuum_worker_s": None}
        seconds = (inside[-1][0] - inside[0][0]) / 1000
        wal_mb = (inside[-1][1] - inside[0][1]) / 1e6
        return {
            "wal_mb_per_s": round(wal_mb / seconds, 2) if seconds else None,
            "autovacuum_worker_s": round(sum(x[2] for x in inside[1:]) * SAMPLE_S, 1),
        }


async def _seed(dsn: str, rows: int) -> tuple[int, float, datetime]:
    async with pg_connection(dsn) as conn:
        origin: datetime = await conn.fetchval("SELECT now()")
        started = time.monotonic()
        shape = seed.Shape(tenants=TENANTS, months=MONTHS, rows=rows)
        loaded = await seed.load(conn, shape, origin, prefix="hist")
        await conn.execute("VACUUM (ANALYZE) conversation_history", timeout=3600)
        await conn.execute("VACUUM (ANALYZE) conversations", timeout=3600)
        await conn.execute("CHECKPOINT", timeout=3600)
        for tenant, days in KEEP_DAYS.items():
            await policies.put(conn, policies.Policy(tenant, timedelta(days=days), "delete"))
    return loaded.total, round(time.monotonic() - started, 1), origin


async def _windows(ctx: Context, dsn: str, writer: Writer, origin: datetime) -> dict[str, Any]:
    """Baseline, then the reference DELETE, then retention; each window's due-time bounds."""
    cfg = ctx.cfg
    await asyncio.sleep((writer.t0_ms - time.time() * 1000) / 1000 + 1.0)  # steady state
    start = time.time() * 1000
    await asyncio.sleep(cfg.retention_baseline_s)
    found: dict[str, Any] = {"baseline": (start, time.time() * 1000)}
    start = time.time() * 1000
    found["reference_delete"] = await _reference(dsn, origin)
    found["reference"] = (start, time.time() * 1000)
    await asyncio.sleep(1.0)
    start = time.time() * 1000
    found["report"] = await _apply(ctx, dsn)
    found["retention"] = (start, time.time() * 1000)
    await asyncio.sleep(SETTLE_S)
    return found


async def _reference(dsn: str, origin: datetime) -> Result:
    """One DELETE of the `regulated` tenant's rows of the month four months back (no policy
    deletes them yet): rows and rows/s."""
    lower = partitions.add_months(partitions.month_start(origin), -4)
    upper = partitions.add_months(lower, 1)
    async with pg_connection(dsn) as conn:
        started = time.monotonic()
        status = await conn.execute(REFERENCE_SQL, "regulated", lower, upper, timeout=3600)
        seconds = time.monotonic() - started
    rows = int(status.split()[-1])
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


async def _apply(ctx: Context, dsn: str) -> dict[str, Any]:
    log = ctx.folder("retention") / "apply.log"
    env = ctx.env("retention", dsn)
    if ctx.cfg.retention_detach == "concurrently":
        env["ARCHIVER_OWNER_DATABASE_URL"] = ctx.stack.owner_dsn(dsn)
    argv = [sys.executable, "-m", "consumer", "retention", "apply", "--json"]
    code = await procs.run_to_end(argv, env, log, within=3600)
    if code != 0:
        raise RuntimeError(f"archiver retention apply exited {code}; see {log}")
    return _report(log)


def _report(log: Path) -> dict[str, Any]:
    """The JSON document `retention apply --json` printed (log lines are single lines)."""
    text = log.read_text(errors="replace")
    start = text.index("{\n")
    parsed: dict[str, Any] = orjson.loads(text[start : text.rindex("\n}") + 2])
    return parsed


def _phases(log: Path, whole: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """The retention run's phases as windows of due times (ms), from its `retention.phase`
    lines (each logged when its phase ends). The first window also holds the process's
    start-up and the plan (leftovers, finished first, take no time without any)."""
    found: dict[str, tuple[float, float]] = {}
    start = whole[0]
    for event in probes.log_events(log, "retention.phase"):
        end = datetime.fromisoformat(str(event["timestamp"])).timestamp() * 1000
        name = "start_and_plan" if event["phase"] == "leftovers" else event["phase"]
        found[f"retention_{name}"] = (start, end)
        start = end
    return found


async def _drain(archiver: procs.Archiver, dsn: str, total: int) -> None:
    async with pg_connection(dsn) as conn:

        async def done() -> bool:
            archiver.check_alive()
            found = await conn.fetchval(
                "SELECT count(DISTINCT source_key) FROM conversation_history"
                " WHERE source_key LIKE $1",
                PREFIX + "%",
            )
            return bool(found >= total)

        await probes.wait_for(done, 180, f"{total} checkpoints archived", every=0.5)


def _ratio(report: dict[str, Any], deletes_s: float, reference: Result) -> float | None:
    """Batched rows/s over the bare DELETE's rows/s."""
    if not deletes_s or not reference["rows_per_s"]:
        return None
    batched = float(report.get("rows_deleted", 0)) / deletes_s
    return round(batched / float(reference["rows_per_s"]), 3)


def _result(
    cfg: Any, loaded: int, load_s: float, writer: Writer, windows: dict[str, Any],
    report: dict[str, Any], log: Path,
) -> Result:  # fmt: skip
    events = list(probes.log_events(log, "checkpoint.archived"))
    ms = {str(e.get("key")): float(e["ms"]) for e in events if "ms" in e}

    def within(name: str) -> Result:
        keys = writer.window(*windows[name])
        return probes.summary([ms[k] for k in keys if k in ms])

    seconds = report.get("seconds", {})
    drops_s, deletes_s = seconds.get("drops", 0.0), seconds.get("deletes", 0.0)
    return {
        "rows": loaded,
        "months": MONTHS,
        "tenants": len(TENANTS),
        "policies_days": {str(k or "default"): v for k, v in KEEP_DAYS.items()},
        "seed_s": load_s,
        "rate": cfg.retention_rate,
        "writer_max_lag_ms": round(writer.max_lag_ms, 1),
        "drop_method": report.get("drop_method"),
        "partitions_dropped": len(report.get("partitions_dropped", [])),
        "rows_dropped": report.get("rows_dropped"),
        "drop_s": drops_s,
        "drop_rows_per_s": round(report.get("rows_dropped", 0) / drops_s, 1) if drops_s else None,
        "rows_deleted": report.get("rows_deleted"),
        "delete_s": deletes_s,
        "delete_rows_per_s": (
            round(report.get("rows_deleted", 0) / deletes_s, 1) if deletes_s else None
        ),
        "settle_s": seconds.get("settle"),
        "conversations_updated": report.get("conversations_updated"),
        "conversations_removed": report.get("conversations_removed"),
        "apply_s": round(sum(seconds.values()), 3),
        "reference_delete": windows["reference_delete"],
        "delete_vs_reference": _ratio(report, deletes_s, windows["reference_delete"]),
        "archive_ms": {
            "baseline": within("baseline"),
            "during_reference_delete": within("reference"),
            "during_retention": within("retention"),
            "by_retention_phase": {
                name.removeprefix("retention_"): within(name)
                for name in windows
                if name.startswith("retention_")
            },
        },
    }
