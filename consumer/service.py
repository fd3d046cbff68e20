"""The always-on consumer and the one-shot sweep: wiring, named tasks, a monitor, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from tenacity import AsyncRetrying, retry_if_exception, wait_fixed

from consumer import (
    archive,
    batcher,
    checkpoints,
    codecs,
    connection,
    deadlines,
    exceptions,
    health,
    heartbeat,
    hints,
    jobs,
    keys,
    listener,
    metrics,
    notifications,
    periodic,
    sources,
    store,
    sweeper,
    web,
)
from consumer.settings import Settings

log = structlog.get_logger("consumer.service")

HEALTH_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a sweep or the consumer needs, connected."""

    settings: Settings
    redis: aioredis.Redis
    pool: asyncpg.Pool
    store: store.Store
    archiver: archive.Archiver
    sweeper: sweeper.Sweeper
    jobs_pool: asyncpg.Pool


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Parts]:
    """Set up both servers' clients. A database with pending migrations is refused; an
    unreachable one is not: the archive path then holds due checkpoints in Redis until it
    answers (and checks its schema first)."""
    pool = await store.connect(
        settings.database_url, command_timeout=settings.db_timeout, max_size=settings.workers + 2
    )
    jobs_pool = await store.connect(
        settings.database_url, command_timeout=settings.job_timeout, max_size=3
    )
    client = connection.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        max_connections=4 * settings.workers + 8,
        encoding_errors=checkpoints.ENCODING_ERRORS,
    )
    try:
        parts = _assemble(settings, client, pool, jobs_pool)
        await _check_schema(parts.store)
        yield parts
    finally:
        await client.aclose()
        await _close_pool(pool, settings.db_timeout)
        await _close_pool(jobs_pool, settings.db_timeout)


async def _close_pool(pool: asyncpg.Pool, patience: float) -> None:
    """Close gracefully if the connections come back in time; a hung server is not waited for."""
    try:
        await asyncio.wait_for(pool.close(), timeout=patience)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


async def _check_schema(the_store: store.Store) -> None:
    try:
        await the_store.ensure_schema()
    except Exception as exc:
        if not store.is_transient(exc):
            raise
        log.error(
            "database.unavailable", error=f"{type(exc).__name__}: {exc}"[:300],
            detail="starting anyway: due checkpoints are held in Redis until PostgreSQL answers",
        )  # fmt: skip


def codec_options(settings: Settings) -> codecs.CodecOptions:
    return codecs.CodecOptions(
        timezone=settings.zone,
        allow_pickle=settings.allow_pickle,
        default_tenant=settings.default_tenant,
        max_payload_bytes=settings.max_payload,
    )


def source_of(settings: Settings, layout: keys.Layout | None = None) -> sources.Source:
    """The source ARCHIVER_SOURCE names, with this configuration's layout and decoding."""
    if layout is None:
        layout = keys.layout_from(settings.key_pattern, settings.shadow_prefix)
    return sources.of(settings, layout, codec_options(settings))


def _assemble(
    settings: Settings, client: aioredis.Redis, pool: asyncpg.Pool, jobs_pool: asyncpg.Pool
) -> Parts:
    layout = keys.layout_from(settings.key_pattern, settings.shadow_prefix)
    timing = checkpoints.Timing(
        buffer_ms=int(settings.buffer * 1000),
        archive_after_ms=int(settings.archive_after * 1000),
        lease_ms=int(settings.claim_ttl * 1000),
        hold_ms=int(2 * settings.claim_ttl * 1000),
        extend_ms=int((settings.buffer + settings.sweep_interval) * 1000),
        max_hold_ms=int(settings.max_hold * 1000),
        max_payload=settings.max_payload,
        batch_bytes=settings.batch_bytes,
    )
    codec = codec_options(settings)
    the_store = store.Store(pool, settings.erasure_secret)
    archiver = archive.Archiver(
        checkpoints.Checkpoints(client, layout, timing, source_of(settings, layout)),
        the_store,
        codec,
        archive.Policy.of(settings),
    )
    return Parts(
        settings, client, pool, the_store, archiver,
        sweeper.Sweeper(archiver, the_store, settings), jobs_pool,
    )  # fmt: skip


async def sweep_once(settings: Settings) -> sweeper.SweepReport:
    """`archiver sweep`: one sweep, its health file, then exit."""
    state = health.State(sweep_interval=settings.sweep_interval, mode="sweep-only")
    async with connected(settings) as parts:
        state.redis_ok = True  # the sweep itself fails otherwise
        state.database_ok = parts.store.schema_verified
        report = await parts.sweeper.sweep()
        state.database_ok = parts.store.schema_verified and report.outcome.held == 0
    batcher.tally(state, report.outcome)
    if report.completed:
        state.last_sweep_ok_at = state.last_sweep_at = time.time()
    health.write_safely(settings.health_file, state.snapshot())
    return report


class Consumer:
    """`archiver run`: listener, deadline poller, batch workers, sweeper, health, HTTP, and
    a loop per periodic job (consumer/periodic.py) unless ARCHIVER_RUN_JOBS is off."""

    def __init__(self, parts: Parts) -> None:
        s = parts.settings
        self.parts = parts
        self.settings = s
        self.state = health.State(sweep_interval=s.sweep_interval)
        self.queue = hints.HintQueue(s.queue_size)
        self.sweep_now = asyncio.Event()
        self.sweep_now.set()  # the first round sweeps whatever peers did: sweep at start
        self.stopping = asyncio.Event()
        layout = parts.archiver.redis.layout
        self.listener = listener.Listener(
            s, layout, parts.archiver.redis.source, self.queue, self.state, self.sweep_now.set
        )
        due_ms = sweeper.Window.of(s).due_ms
        self.batcher = batcher.Batcher(
            self.queue,
            parts.archiver,
            self.state,
            size=s.batch_size,
            wait=s.batch_wait,
            due_ms=due_ms,
        )
        self.deadlines = deadlines.DeadlinePoller(parts.archiver.redis, self.queue, s)
        self.sweeper = sweeper.Sweeper(parts.archiver, parts.store, s, index_polled=True)
        self.heartbeat = heartbeat.Heartbeat(parts.redis, layout, HEALTH_EVERY_S)
        self._last_report = (time.time(), 0, 0, 0, 0)
        self.schema_ready = asyncio.Event()
        self.scheduler = jobs.Scheduler(
            jobs.Runner(parts.jobs_pool, s), periodic.registered(s), self.state, self.schema_ready
        )

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        named: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "listener": self.listener.run,
            "deadlines": self.deadlines.run,
            "sweeper": self._sweep_loop,
            "health": self._health_loop,
            "reporter": self._report_loop,
            "schema": self._schema_watch,
        }
        for i in range(max(1, self.settings.workers)):
            named[f"worker-{i}"] = self.batcher.work
        if self.settings.run_jobs:
            named |= self.scheduler.tasks()
        return named

    async def run(self) -> None:
        """Run until stopped (SIGTERM/SIGINT) or until a task dies (then raise, to be restarted)."""
        runner, s = None, self.settings
        if s.http_port:
            runner = await web.serve(self.state, s.http_host, s.http_port, s.http_timeout)
        running = {asyncio.create_task(make(), name=name) for name, make in self.tasks().items()}
        stop = asyncio.create_task(self.stopping.wait(), name="stop")
        log.info("consumer.started", tasks=sorted(t.get_name() for t in running))
        try:
            done, _ = await asyncio.wait({*running, stop}, return_when=asyncio.FIRST_COMPLETED)
            _raise_if_died(done - {stop})
        finally:
            grace = self.settings.shutdown_timeout
            await _shutdown([*running, stop], grace / 2)  # a sweep releases its lock on the way
            await self._release_claims(grace / 4)
            if runner is not None:
                await runner.cleanup()
            self._write_health()
            log.info("consumer.stopped")

    async def _release_claims(self, patience: float) -> None:
        """Claims of batches cut short go back now: other replicas need not wait out leases."""
        try:
            await asyncio.wait_for(self.parts.archiver.release_in_flight(), timeout=patience)
        except Exception as exc:  # the leases still run out on their own
            log.warning("claims.not_released", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _schema_watch(self) -> None:
        """Until the schema is verified, keep checking; pending migrations stop the consumer."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(store.is_transient),
            wait=wait_fixed(max(self.settings.db_retry_delay, 1.0)),
        )
        async for attempt in retrying:
            with attempt:
                await self.parts.store.ensure_schema()
        self.schema_ready.set()
        await self._warm()
        await asyncio.get_running_loop().create_future()  # verified: idle until cancelled

    async def _warm(self) -> None:
        """Connections, statements, partitions and scripts ready before the first burst; a
        failure here only means the first batch does it (logged, never fatal)."""
        try:
            await self.parts.archiver.redis.load_scripts()
            await self.parts.store.warm(self.settings.workers)
        except Exception as exc:
            log.warning("warm_up.failed", error=f"{type(exc).__name__}: {exc}"[:300])
        else:
            log.info("warm_up.done", connections=self.settings.workers)

    async def _sweep_loop(self) -> None:
        """Sweep at start, every interval, and right after every reconnect."""
        while True:
            pause = await self._sweep_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sweep_now.wait(), timeout=pause)

    async def _sweep_round(self) -> float:
        """Sweep (unless a peer swept recently and no reconnect asks for one); the pause
        until the next round. A sweep skipped for the lock (a peer sweeping, or a killed
        process whose lease has not run out) or failed is retried after a lease. A request
        arriving while this round sweeps asks for another round (cleared here, not after)."""
        asked = self.sweep_now.is_set()
        self.sweep_now.clear()
        interval = self.settings.sweep_interval
        peer_age = await self._peer_sweep_age()
        if not asked and peer_age is not None and peer_age < 0.9 * interval:
            return interval - peer_age
        swept = await self._sweep_safely()
        return interval if swept else self.settings.sweep_lease

    async def _peer_sweep_age(self) -> float | None:
        """Seconds since any replica's last completed sweep, by Redis's clock, if recorded."""
        try:
            return await self._adopt_peer_sweep()
        except Exception:  # unknown: sweep ourselves
            return None

    async def _sweep_safely(self) -> bool:
        """One sweep; whether it completed (False: failed or another process held the lock)."""
        self.state.last_sweep_at = time.time()
        try:
            await notifications.check_eviction(self.parts.redis)
            report = await self.sweeper.sweep()
        except Exception as exc:  # a failed sweep is retried at the next trigger; health shows it
            metrics.SWEEPS.labels(result="failed").inc()
            metrics.ERRORS.labels(stage="sweep").inc()
            self.state.errors += 1
            log.error("sweep.failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return False
        batcher.tally(self.state, report.outcome)
        if report.completed:
            self.state.last_sweep_ok_at = time.time()
        else:
            await self._adopt_peer_sweep()
        return report.completed

    async def _adopt_peer_sweep(self) -> float | None:
        """Another replica is sweeping: its success counts for our health too. The stamp is
        read against Redis's clock (one in the future, from a process whose clock ran ahead,
        counts for nothing), then placed on ours. Returns its age in seconds, if any."""
        age = await self.parts.archiver.redis.sweep_age()
        if age is not None:
            seen = time.time() - age
            self.state.last_sweep_ok_at = max(self.state.last_sweep_ok_at or 0, seen)
            metrics.LAST_SWEEP_OK.set(self.state.last_sweep_ok_at)
        return age

    async def _health_loop(self) -> None:
        while True:
            self.state.redis_ok = await _answers(self.parts.redis.ping())
            self.state.database_ok = await _answers(self.parts.pool.fetchval("SELECT 1"))
            self._write_health()
            await self.heartbeat.renew(self.state)
            await asyncio.sleep(HEALTH_EVERY_S)

    def _write_health(self) -> None:
        try:
            health.write(self.settings.health_file, self.state.snapshot())
        except OSError as exc:
            log.warning("health.not_written", error=str(exc))

    async def _report_loop(self) -> None:
        """One archive_runs row per reporting interval, with what this process did in it."""
        while True:
            await asyncio.sleep(self.settings.report_interval)
            await self._report()

    async def _report(self) -> None:
        s = self.state
        since, archived, messages, dead, errors = self._last_report
        now = time.time()
        self._last_report = (
            now,
            s.checkpoints_archived,
            s.messages_archived,
            s.dead_letters,
            s.errors,
        )
        run = store.Run(
            kind="consumer", host=socket.gethostname(),
            started_at=datetime.fromtimestamp(since, UTC), finished_at=datetime.fromtimestamp(now, UTC),
            status="ok" if s.errors == errors else "errors", found=0,
            archived=s.checkpoints_archived - archived, messages=s.messages_archived - messages,
            dead_letters=s.dead_letters - dead, errors=s.errors - errors,
            details={"mode": s.mode, "hints_dropped": self.queue.dropped},
        )  # fmt: skip
        s.recent_errors = run.errors
        try:
            await self.parts.store.record_run(run)
        except Exception as exc:  # bookkeeping only
            log.warning("report.not_recorded", error=f"{type(exc).__name__}: {exc}"[:300])


async def _answers(call: Awaitable[Any]) -> bool:
    try:
        await asyncio.wait_for(call, timeout=5)
    except Exception:
        return False
    return True


def _raise_if_died(done: set[asyncio.Task[Any]]) -> None:
    for task in done:
        exc = task.exception()
        log.error("consumer.task_died", task=task.get_name(), error=repr(exc))
        if isinstance(exc, exceptions.ArchiverError):
            raise exc
        raise exceptions.ArchiverError(
            f"task {task.get_name()} stopped unexpectedly: {exc!r}"
        ) from exc


async def _shutdown(tasks: list[asyncio.Task[Any]], grace: float) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=grace)


@contextlib.contextmanager
def on_stop(event: asyncio.Event, exit_within: float | None = None) -> Any:
    """Set `event` on SIGTERM/SIGINT while inside; restore the previous handlers after.
    With `exit_within`, the first signal also arms a watchdog that ends the process that many
    seconds later if it has not exited by then: nothing stuck (a log reader, a hung server,
    a decoding thread) can keep it from stopping."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def stop() -> None:
        if exit_within is not None and not event.is_set():
            _exit_later(exit_within)
        event.set()

    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


FORCED_EXIT_CODE = 70  # EX_SOFTWARE: the shutdown did not finish within ARCHIVER_SHUTDOWN_TIMEOUT


def _exit_later(seconds: float) -> None:
    timer = threading.Timer(seconds, os._exit, args=(FORCED_EXIT_CODE,))
    timer.daemon = True
    timer.start()


GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Collect less often than CPython's default for a long-lived process that archives.

    A batch allocates tens of thousands of short-lived containers (each parsed checkpoint is a
    few dozen); with the default thresholds (700, 10, 10) full collections then traverse every
    live object often enough to double the cost of decoding (measured: 200 -> 94 µs per
    checkpoint beside a million live objects). Our garbage is freed by reference counting, not
    by the collector; objects alive at start-up are frozen out of collections altogether.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run(settings: Settings) -> None:
    async with connected(settings) as parts:
        consumer = Consumer(parts)
        with on_stop(consumer.stopping, settings.shutdown_timeout):
            await consumer.run()
