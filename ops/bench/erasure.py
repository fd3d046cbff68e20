"""Scenario `erasure`: the time to erase one customer from N rows of history and M live
checkpoints, and what it does to archiving meanwhile.

One database seeded by COPY (ops/seed.py: 3 months, 5 tenants); the customer owns
VICTIM_CONVERSATIONS of its tenant's conversations there and VICTIM_LIVE live checkpoints in
Redis, among M background ones (none due). `archiver run` (with the erasure key, so that
every batch goes through the fence) archives checkpoints coming due at a steady rate from
start to end. Two windows, each measuring the archiver's `archive_ms` for the checkpoints due
in it: baseline (nothing else runs), then `archiver erase --tenant T --customer C` (the
one-shot, as an operator runs it), timed from the outside and per step from its log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from datetime import datetime
from typing import Any

from ops import seed

from . import probes, procs, redisload, retention
from .common import Context, Result, pg_connection, redis_client

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
MONTHS = 3
VICTIM = "victim-customer"
VICTIM_TENANT = "acme"
VICTIM_CONVERSATIONS = 100
VICTIM_LIVE = 50
KEY = "bench-erasure-key-0123456789abcdef"
DAY_MS = 86_400_000
CONVERSATIONS_SQL = """
SELECT conversation_id FROM conversations WHERE tenant_id = $1 ORDER BY conversation_id LIMIT $2
"""
MARK_SQL = """
UPDATE conversation_history SET customer_id = $3
WHERE conversation_id = ANY($2::text[]) AND tenant_id = $1
"""
MARK_CONVERSATIONS_SQL = """
UPDATE conversations SET customer_id = $3 WHERE tenant_id = $1 AND conversation_id = ANY($2::text[])
"""


async def run(ctx: Context) -> Result:
    cfg = ctx.cfg
    await ctx.ensure_background(cfg.erasure_live)
    await _victim_live(ctx)
    dsn = await ctx.stack.fresh_database("erasure")
    loaded, load_s, victim_rows = await _seed(dsn, cfg.erasure_rows)
    env = ctx.env("erasure", dsn, run_jobs="false", erasure_key=KEY)
    log = ctx.folder("erasure") / "archiver.log"
    writer = retention.Writer(ctx, cfg.erasure_rate)
    async with procs.archiver_run(env, log) as archiver:
        task = asyncio.create_task(writer.run())
        try:
            windows = await _windows(ctx, env, writer)
        finally:
            writer.stop.set()
            await task
        await retention._drain(archiver, dsn, len(writer.due))
        windows["archiver_peak_rss_mb"] = round(archiver.status()["VmHWM"] / 1024, 1)
    return _result(ctx, loaded, load_s, victim_rows, writer, windows, log)


async def _seed(dsn: str, rows: int) -> tuple[int, float, int]:
    """History for every tenant; the victim owns some conversations of one of them."""
    async with pg_connection(dsn) as conn:
        origin: datetime = await conn.fetchval("SELECT now()")
        started = time.monotonic()
        shape = seed.Shape(tenants=TENANTS, months=MONTHS, rows=rows)
        loaded = await seed.load(conn, shape, origin, prefix="hist")
        ids = [r[0] for r in await conn.fetch(CONVERSATIONS_SQL, VICTIM_TENANT,
                                               VICTIM_CONVERSATIONS)]  # fmt: skip
        status = await conn.execute(MARK_SQL, VICTIM_TENANT, ids, VICTIM)
        await conn.execute(MARK_CONVERSATIONS_SQL, VICTIM_TENANT, ids, VICTIM)
        await conn.execute("ANALYZE conversation_history")
        await conn.execute("ANALYZE conversations")
    return loaded.total, round(time.monotonic() - started, 1), int(status.split()[-1])


async def _victim_live(ctx: Context) -> None:
    """The victim's live checkpoints: long TTLs, none due during the run."""
    now = int(time.time())
    entries = []
    for i, conv in enumerate(ctx.gen.batch("victim", VICTIM_LIVE, now)):
        mine = dataclasses.replace(conv, tenant_id=VICTIM_TENANT, customer_id=VICTIM)
        due = int(time.time() * 1000) + DAY_MS // 2 + i
        entries.append(redisload.Entry(mine.key, mine.payload(), due + DAY_MS // 4, due, due))
    async with redis_client(ctx.stack.redis_url) as client:
        await redisload.write(client, entries)
    ctx.background_loaded = -1  # the next scenario loads its own background again


async def _windows(ctx: Context, env: dict[str, str], writer: retention.Writer) -> dict[str, Any]:
    cfg = ctx.cfg
    await asyncio.sleep((writer.t0_ms - time.time() * 1000) / 1000 + 1.0)  # steady state
    start = time.time() * 1000
    await asyncio.sleep(cfg.erasure_baseline_s)
    found: dict[str, Any] = {"baseline": (start, time.time() * 1000)}
    start = time.time() * 1000
    log = ctx.folder("erasure") / "erase.log"
    argv = [sys.executable, "-m", "consumer", "erase", "--tenant", VICTIM_TENANT,
            "--customer", VICTIM, "--json"]  # fmt: skip
    began = time.monotonic()
    code, peak_kb = await _run_measured(argv, env, log, within=3600)
    found["erase_s"] = round(time.monotonic() - began, 2)
    found["erase_peak_rss_mb"] = round(peak_kb / 1024, 1)
    if code != 0:
        raise RuntimeError(f"archiver erase exited {code}; see {log}")
    found["erasure"] = (start, time.time() * 1000)
    found["report"] = retention._report(log)
    found["steps"] = _steps(log, start)
    await asyncio.sleep(retention.SETTLE_S)
    return found


async def _run_measured(
    argv: list[str], env: dict[str, str], log: Any, within: float
) -> tuple[int, int]:
    """Run a child to its end as procs.run_to_end does; its exit code and peak RSS in kB
    (wait4's ru_maxrss: that child's alone, whatever it freed before exiting)."""
    proc = procs.spawn(argv, env, log)
    try:
        _, status, usage = await asyncio.wait_for(asyncio.to_thread(os.wait4, proc.pid, 0),
                                                  within)  # fmt: skip
    except TimeoutError:
        await procs.stop(proc, signal.SIGKILL)
        raise TimeoutError(f"{argv[-1]} still running after {within:.0f}s; see {log}") from None
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    return proc.returncode, usage.ru_maxrss


def _steps(log: Any, start_ms: float) -> dict[str, float]:
    """Seconds each step took, from the `erasure.step` lines (logged as each ends)."""
    found: dict[str, float] = {}
    previous = start_ms
    for event in probes.log_events(log, "erasure.step"):
        end = datetime.fromisoformat(str(event["timestamp"])).timestamp() * 1000
        found[str(event["step"])] = round((end - previous) / 1000, 3)
        previous = end
    return found


def _result(
    ctx: Context, loaded: int, load_s: float, victim_rows: int, writer: retention.Writer,
    windows: dict[str, Any], log: Any,
) -> Result:  # fmt: skip
    events = list(probes.log_events(log, "checkpoint.archived"))
    ms = {str(e.get("key")): float(e["ms"]) for e in events if "ms" in e}

    def within(name: str) -> Result:
        keys = writer.window(*windows[name])
        return probes.summary([ms[k] for k in keys if k in ms])

    report = windows["report"]
    return {
        "rows": loaded,
        "live_checkpoints": ctx.cfg.erasure_live + VICTIM_LIVE,
        "seed_s": load_s,
        "victim_rows": victim_rows,
        "victim_live": VICTIM_LIVE,
        "rate": ctx.cfg.erasure_rate,
        "erase_s": windows["erase_s"],
        "erase_peak_rss_mb": windows["erase_peak_rss_mb"],
        "archiver_peak_rss_mb": windows["archiver_peak_rss_mb"],
        "steps_s": windows["steps"],
        "counts": report.get("counts", {}),
        "status": report.get("status"),
        "archive_ms": {"baseline": within("baseline"), "during_erasure": within("erasure")},
    }
