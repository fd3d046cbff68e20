"""Faults of the surroundings an operator deploys the archiver into by the book: a log reader
that stops reading, least-privilege users, clocks hours off, PostgreSQL refusing for reasons
of its own (a lock held by maintenance, a full disk), and values far too large.

Every scenario runs its archivers as the Redis ACL user of ops/redis-acl.conf and as a
PostgreSQL login role holding only archiver_writer (runner.py); `acl` and
`pg_least_privilege` add the workloads that used to break under them."""

from __future__ import annotations

import asyncio
import collections
import glob
import re
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg

from consumer.demo import embedded
from ops.disk import TmpfsTablespace
from ops.faults.config import SHUTDOWN_TIMEOUT_S
from ops.faults.procs import Proc
from ops.faults.runner import Run, Scenario
from ops.faults.shapes import MB, due_soon, mix, windows
from ops.faults.workload import write_large, write_oversized

FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
SKEW_H = 3


# --- log_stall -----------------------------------------------------------------------------------


async def inject_log_stall(run: Run) -> None:
    """Stop reading the consumer's stderr during the burst (its pipe shrunk to one page). While
    stalled, SIGTERM it: it must exit within ARCHIVER_SHUTDOWN_TIMEOUT and leave no sweep lock
    behind (a cron sweep right after it must not skip); its replacement logs into a stalled
    pipe too until the reader comes back."""
    stall = 8.0 if run.quick else 60.0
    await asyncio.sleep(due_soon(run) - 1.0)
    _pause_relays(run)
    await asyncio.sleep(stall / 2)
    old = run.fleet.running("consumer")
    assert old is not None
    exit_s, code = await _terminate(old)
    swept = await _cron_sweep(run)
    run.fleet.start("consumer")
    _pause_relays(run)
    await asyncio.sleep(stall / 2)
    for relay in run.fleet.relays():
        relay.resume()
    dropped = await _dropped_reported(run)
    run.facts |= {"stall_s": stall, "sigterm_exit_s": round(exit_s, 2), "exit_code": code,
                  "log_lines_dropped_reported": dropped, "cron_sweep_after_stop": swept}  # fmt: skip
    run.checks["stopped_within_shutdown_timeout"] = code == 0 and exit_s <= SHUTDOWN_TIMEOUT_S
    run.checks["cron_sweep_right_after_the_stop_was_not_skipped"] = swept == "swept"
    run.checks["log_lines_dropped_and_reported"] = dropped > 0


async def _dropped_reported(run: Run, patience: float = 15.0) -> int:
    """Lines the archivers said they dropped (`logs.dropped`, written once the reader is back)."""
    deadline = time.monotonic() + patience
    while True:
        events = run.fleet.events()
        dropped = sum(int(e.get("lines", 0)) for e in events if e.get("event") == "logs.dropped")
        if dropped or time.monotonic() > deadline:
            return dropped
        await asyncio.sleep(0.25)


def _pause_relays(run: Run) -> None:
    for relay in run.fleet.relays():
        relay.pause()


async def _terminate(proc: Proc) -> tuple[float, int]:
    """SIGTERM (on purpose: not a crash to restart); seconds until it exited, exit code."""
    proc.killed = True
    sent = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.popen.wait, 3 * SHUTDOWN_TIMEOUT_S + 20)
    return time.monotonic() - sent, code


async def _cron_sweep(run: Run) -> str:
    """One `archiver sweep`: "swept", "skipped" (another sweep held the lock) or "failed"."""
    proc = run.fleet.start("cron", "sweep")
    code = await asyncio.to_thread(proc.popen.wait, 120)
    output = proc.log_path.read_text(errors="replace")
    if "skipped" in output:
        return "skipped"
    return "swept" if code == 0 else f"failed ({code})"


def log_stall(quick: bool) -> Scenario:
    return Scenario(
        "log_stall", "the consumer's stderr not read for 60 s during a burst; SIGTERM meanwhile",
        windows(quick), mix(quick, duration=14.0 if quick else 75.0,
                            conversations=150 if quick else 400),
        inject_log_stall, relayed=lambda name: name == "consumer",
        env=lambda name: {"ARCHIVER_LOG_BUFFER": "16384"},
    )  # fmt: skip


# --- acl -----------------------------------------------------------------------------------------


async def inject_acl_sweeps(run: Run) -> None:
    """Cron sweeps beside the consumer: plain SETs without shadows and checkpoints without a
    TTL need the sweeper, whose classify script once lacked ZSCORE in the ACL."""
    outcomes: list[str] = []
    await asyncio.sleep(1.0)
    while run.writing():
        outcomes.append(await _cron_sweep(run))
        await asyncio.sleep(run.rng.uniform(0.5, 2.0))
    outcomes.append(await _cron_sweep(run))
    run.facts["cron_sweeps"] = dict(collections.Counter(outcomes))
    run.checks["cron_sweeps_succeeded"] = bool(outcomes) and all(
        o in ("swept", "skipped") for o in outcomes
    )


def acl(quick: bool) -> Scenario:
    """The workload that once lost every unshadowed checkpoint under ops/redis-acl.conf: half
    plain SETs (no shadow, no deadline entry), a third of those without a TTL, cron sweeps.
    The ACL LOG must stay empty (checked for every scenario)."""
    return Scenario(
        "acl", "plain SETs and keys without TTL under the ACL user, with cron sweeps",
        windows(quick), mix(quick, duration=8.0 if quick else 30.0, plain=0.5, persistent=0.3),
        inject_acl_sweeps,
    )  # fmt: skip


# --- pg_least_privilege --------------------------------------------------------------------------

MONTHS = (-13, -1, 0, 1, 2, 14)
ROLES_SQL = """
SELECT DISTINCT usename FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
PARTITIONS_SQL = """
SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'conversation_history'::regclass
"""


async def inject_least_privilege(run: Run) -> None:
    """Messages in months that have no partition yet (last year, next month, next year): each
    is created at runtime by a role that owns nothing, through the SECURITY DEFINER function."""
    conn = await asyncpg.connect(run.database_url, timeout=10)
    try:
        before = {r["relname"] for r in await conn.fetch(PARTITIONS_SQL)}
        assert run.writer is not None
        await run.writer.done.wait()
        roles = {r["usename"] for r in await conn.fetch(ROLES_SQL)}
        await asyncio.sleep(run.windows.buffer + 2.0)
        after = await conn.fetch(PARTITIONS_SQL)
    finally:
        await conn.close()
    created = sorted(r["relname"] for r in after if r["relname"] not in before)
    owners = {r["owner"] for r in after}
    run.facts |= {"archiver_roles": sorted(roles), "partitions_created": created,
                  "partition_owners": sorted(owners)}  # fmt: skip
    run.checks["archivers_logged_in_as_the_writer_only"] = roles == {embedded.PG_WRITER}
    run.checks["month_partitions_created_at_runtime"] = len(created) >= 3  # warm-up made 2
    run.checks["partitions_owned_by_the_migration_owner"] = owners == {embedded.PG_OWNER}


def pg_least_privilege(quick: bool) -> Scenario:
    return Scenario(
        "pg_least_privilege", "runtime role archiver_writer only, across month boundaries",
        windows(quick), mix(quick, duration=8.0 if quick else 30.0, months=MONTHS),
        inject_least_privilege,
    )  # fmt: skip


# --- clock_skew ----------------------------------------------------------------------------------


def faketime_library() -> str:
    found = sorted(glob.glob(FAKETIME_GLOB))
    if not found:
        raise RuntimeError("libfaketime not found: apt-get install faketime (make servers)")
    return found[0]


def _skewed(name: str) -> dict[str, str]:
    hours = {"consumer-ahead": SKEW_H, "consumer-behind": -SKEW_H}.get(name)
    if hours is None:
        return {}
    return {
        "LD_PRELOAD": faketime_library(),
        "FAKETIME": f"{hours:+d}h",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


async def inject_clock_skew(run: Run) -> None:
    """Two consumers whose clocks are 3 h ahead and 3 h behind Redis's, through a PostgreSQL
    outage longer than the buffer: holds must extend TTLs by Redis's clock, never cut them."""
    await asyncio.sleep(due_soon(run))
    outage = 8.0 if run.quick else 20.0
    run.pg.stop()
    await asyncio.sleep(outage)
    run.pg.start()
    skews = {p.name: _clock_offset_h(p) for p in run.fleet.procs}
    run.facts |= {"outage_s": outage, "clock_offsets_h": skews}
    run.checks["clocks_skewed_as_set"] = (
        skews.get("consumer-ahead") == SKEW_H and skews.get("consumer-behind") == -SKEW_H
    )
    run.checks["outage_longer_than_buffer"] = outage > run.windows.buffer


def _clock_offset_h(proc: Proc) -> int | None:
    """Hours between a process's clock (its first log line's time) and ours, rounded."""
    with proc.log_path.open("rb") as log:
        first = log.readline()
    found = re.search(rb'"timestamp":"([^"]+)"', first)
    if found is None:
        return None
    seen = datetime.fromisoformat(found[1].decode().replace("Z", "+00:00")).timestamp()
    started = time.time() - (time.monotonic() - proc.started)
    return round((seen - started) / 3600)


def clock_skew(quick: bool) -> Scenario:
    return Scenario(
        "clock_skew", "archivers with clocks 3 h ahead and 3 h behind, through a PostgreSQL outage",
        windows(quick, max_hold=40.0 if quick else 60.0),
        mix(quick, duration=12.0 if quick else 30.0, plain=0.5, persistent=0.2),
        inject_clock_skew, consumers=("consumer-ahead", "consumer-behind"), env=_skewed,
        settle_s=60.0,
    )  # fmt: skip


# --- pg_lock_timeout -----------------------------------------------------------------------------


def _database(run: Run) -> str:
    return run.database_url.rsplit("/", 1)[1]


async def prepare_lock_timeout(run: Run) -> None:
    conn = await asyncpg.connect(run.pg.dsn(), timeout=10)
    try:
        await conn.execute(
            f"ALTER ROLE {embedded.PG_WRITER} IN DATABASE {_database(run)} SET lock_timeout = '300ms'"
        )
    finally:
        await conn.close()


async def inject_lock_timeout(run: Run) -> None:
    """Maintenance holds a lock the archive path needs (as VACUUM FULL or a long ALTER would),
    twice, while checkpoints come due: every batch fails with lock_not_available (55P03) and
    must be held, never dead-lettered."""
    hold = 5.0 if run.quick else 15.0
    await asyncio.sleep(due_soon(run))
    for _ in range(2):
        conn = await asyncpg.connect(run.database_url, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE conversations IN EXCLUSIVE MODE")
                await asyncio.sleep(hold)
        finally:
            await conn.close()
        await asyncio.sleep(2.0)
    seen = _failures(run, "LockNotAvailableError")
    run.facts |= {"lock_held_s": hold, "lock_timeouts_logged": seen}
    run.checks["lock_timeouts_happened"] = seen > 0


def _failures(run: Run, error: str) -> int:
    return sum(
        1 for e in run.fleet.events()
        if e.get("event") == "batch.failed" and error in str(e.get("error", ""))
    )  # fmt: skip


def pg_lock_timeout(quick: bool) -> Scenario:
    return Scenario(
        "pg_lock_timeout", "maintenance holds a lock; the writer role has lock_timeout 300 ms",
        windows(quick), mix(quick, duration=12.0 if quick else 30.0), inject_lock_timeout,
        prepare=prepare_lock_timeout, settle_s=60.0,
    )  # fmt: skip


# --- pg_disk_full --------------------------------------------------------------------------------

DISKS: dict[str, TmpfsTablespace] = {}


async def prepare_disk_full(run: Run) -> None:
    """The months the workload writes to live in a tablespace on a small tmpfs (root only)."""
    space = f"tiny_{uuid.uuid4().hex[:8]}"
    disk = TmpfsTablespace(run.pg, space, (4 if run.quick else 16) * MB * 1024)
    disk.mount()
    DISKS[run.scenario.name] = disk
    conn = await asyncpg.connect(run.database_url, timeout=10)
    try:
        await conn.execute(f"CREATE TABLESPACE {space} LOCATION '{disk.location}'")
        await conn.execute(f"GRANT CREATE ON TABLESPACE {space} TO {embedded.PG_OWNER}")
        await conn.execute(f"SET default_tablespace = {space}")
        for days in (-40, 0, 31):
            await conn.execute(
                "SELECT archiver_ensure_partition(now() + make_interval(days => $1))", days
            )
    finally:
        await conn.close()


async def inject_disk_full(run: Run) -> None:
    """The volume fills up as checkpoints come due; an operator frees space a while later."""
    disk = DISKS[run.scenario.name]
    full = 8.0 if run.quick else 20.0
    await asyncio.sleep(due_soon(run) - 2.0)
    taken = await asyncio.to_thread(disk.fill)
    await asyncio.sleep(full)
    disk.free()
    seen = _failures(run, "DiskFullError")
    run.facts |= {"disk_full_s": full, "filler_bytes": taken, "disk_full_errors_logged": seen}
    run.checks["disk_full_happened"] = seen > 0


async def cleanup_disk_full(run: Run) -> None:
    disk = DISKS.pop(run.scenario.name, None)
    if disk is None:
        return
    try:
        await embedded.drop_database(run.pg.dsn(), _database(run))
        conn = await asyncpg.connect(run.pg.dsn(), timeout=10)
        try:
            await conn.execute(f"DROP TABLESPACE IF EXISTS {disk.name}")
        finally:
            await conn.close()
    finally:
        disk.unmount()


def pg_disk_full(quick: bool) -> Scenario:
    return Scenario(
        "pg_disk_full", "the tablespace's volume full while checkpoints come due (tmpfs, root)",
        windows(quick), mix(quick, duration=12.0 if quick else 30.0), inject_disk_full,
        prepare=prepare_disk_full, cleanup=cleanup_disk_full, settle_s=60.0,
    )  # fmt: skip


# --- huge_payloads -------------------------------------------------------------------------------

TRUNCATED_SQL = "SELECT count(*) FROM archive_dead_letters WHERE truncated"


def _huge_sizes(quick: bool) -> tuple[int, int, int]:
    """(values over the limit, their size, the archiver's ARCHIVER_MAX_PAYLOAD) in bytes."""
    if quick:
        return 3, 12 * MB * 1024, 8 * MB * 1024
    return 3, 400 * MB * 1024, 64 * MB * 1024


async def inject_huge(run: Run) -> None:
    """While the usual small checkpoints flow, values over the limit (400 MB: under Redis's
    512 MB) and one valid checkpoint of tens of MB come due together."""
    count, size, _ = _huge_sizes(run.quick)
    messages = 20_000 if run.quick else 230_000
    client, prod = run.client, run.producer
    large_key = prod.key(f"large-{run.seed}")
    large = await write_large(client, prod, run.ledger, large_key, messages)
    for i in range(count):
        key = prod.key(f"huge-{run.seed}-{i}")
        await write_oversized(client, prod, run.ledger, key, size, run.seed + i)
    assert run.writer is not None
    await run.writer.done.wait()
    await asyncio.sleep(run.windows.buffer + 5.0)
    conn = await asyncpg.connect(run.database_url, timeout=10)
    try:
        truncated = await conn.fetchval(TRUNCATED_SQL)
    finally:
        await conn.close()
    run.facts |= {"oversized_values": count, "oversized_mb": size // (MB * 1024),
                  "large_valid_mb": round(large / 2**20, 1), "large_valid_messages": messages,
                  "truncated_dead_letters": truncated}  # fmt: skip
    run.checks["oversized_values_dead_lettered_as_prefix"] = truncated == count


def _payload_env(quick: bool) -> Callable[[str], dict[str, str]]:
    limit = _huge_sizes(quick)[2]
    return lambda name: {"ARCHIVER_MAX_PAYLOAD": str(limit)}


def huge_payloads(quick: bool) -> Scenario:
    """Memory is the point: peak RSS is reported and bounded. Windows are wider than the
    others' (a valid checkpoint of tens of MB takes seconds to decode and insert here)."""
    w = windows(quick, ttl=30.0, archive_after=12.0, claim_ttl=20.0, sweep_interval=10.0,
                db_timeout=10.0) if quick else windows(quick, ttl=90.0, archive_after=45.0,
                claim_ttl=60.0, sweep_interval=20.0, db_timeout=20.0)  # fmt: skip
    return Scenario(
        "huge_payloads", "values of 400 MB over the limit, a valid one of 60 MB, small ones",
        w, mix(quick, duration=12.0 if quick else 30.0), inject_huge, env=_payload_env(quick),
        settle_s=120.0, rss_limit_kb=(256 if quick else 1024) * MB,
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[bool], Scenario]] = {
    "log_stall": log_stall,
    "acl": acl,
    "pg_least_privilege": pg_least_privilege,
    "clock_skew": clock_skew,
    "pg_lock_timeout": pg_lock_timeout,
    "pg_disk_full": pg_disk_full,
    "huge_payloads": huge_payloads,
}
