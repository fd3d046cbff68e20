"""The fault scenarios. Each builds a Scenario for the full or the quick (`--quick`) run."""

from __future__ import annotations

import asyncio
import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ops.faults import cold, erasure, hooks, langgraph_source, retention, surroundings
from ops.faults.procs import Proc
from ops.faults.runner import Run, Scenario, redis_command
from ops.faults.shapes import HANG_S, MB, due_soon, mix, windows

# --- kill9 ---------------------------------------------------------------------------------------


async def inject_kill9(run: Run) -> None:
    """SIGKILL the consumer again and again during the burst and restart it at once; every
    other kill lands deterministically after a batch's commit and before its Redis delete.
    Each new process gets to start and work a little (a random 0.3-2.5 s) before its kill."""
    target = 4 if run.quick else 12
    hooked = confirmed = 0
    for i in range(target):
        proc = run.fleet.running("consumer") or run.fleet.start("consumer")
        await run.fleet.ready(proc)
        await asyncio.sleep(run.rng.uniform(0.3, 2.0 if run.quick else 2.5))
        if i % 2 == 0:
            left = await kill_after_commit(run, proc)
            hooked += left >= 0
            confirmed += left > 0
        else:
            run.fleet.kill(proc)
        run.fleet.start("consumer")
    run.facts |= {"hooked_kills": hooked, "kills_after_commit_before_delete": confirmed}
    run.checks["at_least_10_kills" if not run.quick else "kills_done"] = run.fleet.kills >= (
        10 if not run.quick else target
    )
    run.checks["a_kill_landed_after_commit_before_delete"] = confirmed > 0


async def kill_after_commit(run: Run, proc: Proc) -> int:
    """Kill `proc` between a batch's commit and its compare-and-delete; returns how many
    claimed checkpoints were committed but still in Redis at the kill (-1: no batch caught,
    killed at a random moment instead)."""
    paused = False
    async with hooks.blocked_batch(run.database_url, patience=8.0) as caught:
        if caught:
            paused = await redis_command(run.client, "CLIENT", "PAUSE", 10_000, "WRITE") is not None
    try:
        if not (caught and paused):
            run.fleet.kill(proc)
            return -1
        await hooks.settled(run.database_url)
        await asyncio.sleep(0.2)
        claimed = await hooks.claimed(run.client, run.layout)
        left = await hooks.committed_in_redis(run.database_url, run.client, run.ledger, claimed)
        run.fleet.kill(proc)
        return left
    finally:
        if paused:
            await redis_command(run.client, "CLIENT", "UNPAUSE")


def kill9(quick: bool) -> Scenario:
    return Scenario(
        "kill9", "SIGKILL the consumer ≥10 times mid-burst (half right after a commit)",
        windows(quick, ttl=14.0) if quick else windows(quick),  # restarts need slack
        mix(quick, duration=10.0 if quick else 40.0), inject_kill9,
    )  # fmt: skip


# --- PostgreSQL faults ---------------------------------------------------------------------------


async def inject_pg_outage(run: Run) -> None:
    w = run.windows
    outage = 8.0 if run.quick else 20.0
    await asyncio.sleep(due_soon(run))
    run.pg.stop()
    await asyncio.sleep(outage)
    run.pg.start()
    budget = w.db_retries * w.db_timeout + (w.db_retries - 1) * w.db_retry_delay
    run.facts |= {"outage_s": outage, "retry_budget_s": budget, "max_hold_s": w.max_hold}
    run.checks["outage_longer_than_retry_budget_and_buffer"] = outage > max(budget, w.buffer)
    run.checks["outage_shorter_than_max_hold"] = outage < w.max_hold


def pg_outage(quick: bool) -> Scenario:
    return Scenario(
        "pg_outage", "stop PostgreSQL longer than the retries and the buffer, under MAX_HOLD",
        windows(quick, max_hold=40.0 if quick else 60.0),
        mix(quick, duration=12.0 if quick else 30.0), inject_pg_outage, settle_s=60.0,
    )  # fmt: skip


async def _pg_frozen(run: Run, hang: float) -> None:
    w = run.windows
    await asyncio.sleep(due_soon(run))
    run.pg.pause()
    try:
        await asyncio.sleep(hang)
    finally:
        run.pg.resume()
    run.facts |= {"sigstop_s": hang, "buffer_s": w.buffer, "max_hold_s": w.max_hold}


async def inject_pg_hang(run: Run) -> None:
    await _pg_frozen(run, HANG_S[run.quick])


def pg_hang(quick: bool) -> Scenario:
    return Scenario(
        "pg_hang", "SIGSTOP PostgreSQL, then SIGCONT", windows(quick),
        mix(quick, duration=10.0 if quick else 30.0), inject_pg_hang,
    )  # fmt: skip


async def inject_pg_hang_long(run: Run) -> None:
    hang = 2.5 * run.windows.buffer
    await _pg_frozen(run, hang)
    run.checks["hang_longer_than_buffer_shorter_than_max_hold"] = (
        run.windows.buffer < hang < run.windows.max_hold
    )


def pg_hang_long(quick: bool) -> Scenario:
    """Like pg_outage (which stops PostgreSQL, so connections are refused at once), but
    frozen: every attempt waits for its timeouts. Longer than the buffer, shorter than
    MAX_HOLD: the checkpoints coming due must be held in Redis, as in pg_outage."""
    return Scenario(
        "pg_hang_long", "SIGSTOP PostgreSQL 2.5 x the buffer (< MAX_HOLD), then SIGCONT",
        windows(quick), mix(quick, duration=24.0 if quick else 40.0), inject_pg_hang_long,
        settle_s=60.0,
    )  # fmt: skip


# --- Redis faults --------------------------------------------------------------------------------


async def inject_redis_hang(run: Run) -> None:
    hang = HANG_S[run.quick]
    await asyncio.sleep(due_soon(run))
    run.redis.pause()
    try:
        await asyncio.sleep(hang)
    finally:
        run.redis.resume()
    run.facts["sigstop_s"] = hang
    run.checks["buffer_longer_than_hang"] = run.windows.buffer > hang


def redis_hang(quick: bool) -> Scenario:
    # Redis's clock runs on while it is stopped: the buffer must outlast the hang, else no
    # archiver could have run within it (the promise's own condition).
    return Scenario(
        "redis_hang", "SIGSTOP Redis, then SIGCONT (buffer > hang)",
        windows(quick, ttl=12.0) if quick else windows(quick, ttl=30.0),
        mix(quick, duration=10.0 if quick else 30.0), inject_redis_hang,
    )  # fmt: skip


async def inject_redis_restart(run: Run) -> None:
    restarts = 1 if run.quick else 2
    await asyncio.sleep(due_soon(run))
    for _ in range(restarts):
        run.redis.restart()
        await asyncio.sleep(run.rng.uniform(2.0, 4.0))
    run.facts["restarts"] = restarts


def redis_restart(quick: bool) -> Scenario:
    return Scenario(
        "redis_restart", "restart Redis (AOF on) mid-run", windows(quick),
        mix(quick, duration=10.0 if quick else 30.0), inject_redis_restart, appendonly=True,
    )  # fmt: skip


async def inject_pubsub_killed(run: Run) -> None:
    kills = 0
    await asyncio.sleep(1.0)
    while run.writing():
        await redis_command(run.client, "CLIENT", "KILL", "TYPE", "pubsub")
        kills += 1
        await asyncio.sleep(run.rng.uniform(0.5, 2.0))
    run.facts["pubsub_kills"] = kills


def pubsub_killed(quick: bool) -> Scenario:
    return Scenario(
        "pubsub_killed", "CLIENT KILL TYPE pubsub, repeatedly", windows(quick),
        mix(quick, duration=8.0 if quick else 30.0), inject_pubsub_killed,
    )  # fmt: skip


# --- replicas ------------------------------------------------------------------------------------


async def inject_cron_sweeps(run: Run) -> None:
    """A cron-style `archiver sweep` loop beside the three `archiver run` replicas."""
    codes: list[int] = []
    await asyncio.sleep(1.0)
    while run.writing():
        proc = run.fleet.start("cron", "sweep")
        codes.append(await asyncio.to_thread(proc.popen.wait, 120))
        await asyncio.sleep(run.rng.uniform(0.5, 2.0))
    run.facts |= {"cron_sweeps": len(codes), "cron_exit_codes": sorted(set(codes))}
    run.checks["cron_sweeps_ran"] = bool(codes)


def replicas(quick: bool) -> Scenario:
    return Scenario(
        "replicas", "three `archiver run` + a cron `archiver sweep` loop", windows(quick),
        mix(quick, duration=8.0 if quick else 30.0, rewrite=0.0), inject_cron_sweeps,
        consumers=("consumer-a", "consumer-b", "consumer-c"),
    )  # fmt: skip


# --- rewrite_race --------------------------------------------------------------------------------


async def inject_rewrites(run: Run) -> None:
    """Besides the writer's rewrites at due time, catch batches in flight (claimed, not yet
    committed) and rewrite exactly the checkpoints they hold."""
    rounds = 3 if run.quick else 10
    rewritten = caught_rounds = 0
    await asyncio.sleep(due_soon(run) - 1.0)
    for _ in range(rounds):
        if not run.writing():
            break
        async with hooks.blocked_batch(run.database_url, patience=5.0) as caught:
            if caught:
                caught_rounds += 1
                rewritten += await _rewrite_claimed(run)
        await asyncio.sleep(run.rng.uniform(0.2, 1.0))
    run.facts |= {"rounds_caught": caught_rounds, "rewritten_while_archiving": rewritten}
    run.checks["rewrote_checkpoints_while_archiving"] = rewritten > 0


async def _rewrite_claimed(run: Run) -> int:
    assert run.writer is not None
    count = 0
    for key in await hooks.claimed(run.client, run.layout):
        target = run.writer.owner.get(key)
        if target is not None:
            mode = run.rng.choice(("producer", "keepttl"))
            count += await run.writer.rewrite(run.writer.convs[target], key, mode)
    return count


def rewrite_race(quick: bool) -> Scenario:
    return Scenario(
        "rewrite_race", "rewrite checkpoints while they are being archived", windows(quick),
        mix(quick, duration=10.0 if quick else 30.0, rewrite=0.2, due_rewrite=0.5),
        inject_rewrites,
    )  # fmt: skip


# --- flood ---------------------------------------------------------------------------------------


async def inject_nothing(run: Run) -> None:
    await asyncio.sleep(0)


def flood(quick: bool) -> Scenario:
    """100k checkpoints written while the consumer is down, their shadows set to fire within
    the same 2 s, 3 s after it starts: the startup sweep, 100k `expired` events and the
    deadline index all hit at once. The checkpoints expire a buffer later; all must be
    archived by then with bounded memory. The buffer is sized for this machine (~2k
    checkpoints/s when loaded by other jobs); in production it is an hour."""
    count = 10_000 if quick else 100_000
    buffer = 25.0 if quick else 120.0
    w = windows(quick, ttl=buffer + 3.0, archive_after=3.0, sweep_interval=3.0, batch_size=500)
    return Scenario(
        "flood", f"{count:,} shadows expiring within seconds", w, mix(quick), inject_nothing,
        flood=count, settle_s=w.ttl + 30.0, rss_limit_kb=768 * MB,
    )  # fmt: skip


# --- no_notifications ----------------------------------------------------------------------------


async def inject_check_degraded(run: Run) -> None:
    assert run.writer is not None
    await run.writer.done.wait()
    events = {str(e.get("event")) for e in run.fleet.events()}
    run.checks["degraded_mode_announced"] = "notifications.unavailable" in events


def no_notifications(quick: bool) -> Scenario:
    return Scenario(
        "no_notifications", "CONFIG renamed away, notifications off: sweeper + index only",
        windows(quick), mix(quick, duration=8.0 if quick else 30.0, plain=0.5),
        inject_check_degraded,
        redis_config=('rename-command CONFIG ""', 'notify-keyspace-events ""'),
    )  # fmt: skip


# --- timestamp_drift -----------------------------------------------------------------------------


async def inject_drift_check(run: Run) -> None:
    await asyncio.sleep(0)
    run.checks["workload_drifted_timestamps"] = run.scenario.mix.ts_drift > 0


def timestamp_drift(quick: bool) -> Scenario:
    """No fault: messages carried into later checkpoints sometimes come with their timestamp
    dropped, cut to milliseconds or moved (same id, same content): still one row each."""
    return Scenario(
        "timestamp_drift", "no fault; a message's timestamp differs between checkpoints",
        windows(quick), mix(quick, duration=10.0 if quick else 20.0, ts_drift=0.3),
        inject_drift_check,
    )  # fmt: skip


# --- retention -----------------------------------------------------------------------------------


def retention_kills(quick: bool) -> Scenario:
    """Retention runs SIGKILLed mid-way (see ops/faults/retention.py) while the archiver, as
    the least-privilege writer role, archives the workload."""
    return Scenario(
        "retention", "SIGKILL retention runs mid-way while archiving; the next run completes",
        windows(quick), mix(quick, duration=10.0 if quick else 30.0),
        retention.inject_retention, settle_s=60.0,
        env=lambda name: {"ARCHIVER_RETENTION_BATCH": str(retention.size(quick).batch),
                          "ARCHIVER_JOB_LEASE": "3s"},
    )  # fmt: skip


# --- the cold tier -------------------------------------------------------------------------------


def cold_export(quick: bool) -> Scenario:
    """Cold tier exports SIGKILLed mid-way (see ops/faults/cold.py) while archiving; the
    files go to a directory of their own, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="archiver-faults-cold-"))

    async def cleanup(run: Run) -> None:
        await asyncio.to_thread(shutil.rmtree, root, True)

    return Scenario(
        "cold_export", "SIGKILL cold tier exports mid-way while archiving; the next one completes",
        windows(quick), mix(quick, duration=10.0 if quick else 30.0),
        functools.partial(cold.inject_cold_export, root=root), settle_s=60.0, cleanup=cleanup,
        env=lambda name: cold.env(root, name) if name.startswith("cold") else {},
    )  # fmt: skip


# --- erasure_race --------------------------------------------------------------------------------


def erasure_race(quick: bool) -> Scenario:
    """Erasures of customers SIGKILLed mid-way while every customer keeps writing (see
    ops/faults/erasure.py); every one resumed and verified."""
    return Scenario(
        "erasure_race", "erase customers while they write; SIGKILL half the erasures, resume",
        windows(quick), mix(quick, duration=12.0 if quick else 30.0),
        erasure.inject_erasure_race, settle_s=60.0, env=erasure.env,
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[bool], Scenario]] = {
    "kill9": kill9,
    "pg_outage": pg_outage,
    "pg_hang": pg_hang,
    "pg_hang_long": pg_hang_long,
    "redis_hang": redis_hang,
    "redis_restart": redis_restart,
    "pubsub_killed": pubsub_killed,
    "replicas": replicas,
    "rewrite_race": rewrite_race,
    "flood": flood,
    "no_notifications": no_notifications,
    "timestamp_drift": timestamp_drift,
    "retention": retention_kills,
    "cold_export": cold_export,
    "erasure_race": erasure_race,
    "langgraph": langgraph_source.scenario,
    **surroundings.SCENARIOS,
}
