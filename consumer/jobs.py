"""Periodic jobs: each is a name, a cron schedule and a coroutine. A run holds the job's lease in
PostgreSQL (a row with a holder and an expiry by PostgreSQL's clock, so a killed holder's lease
runs out), is recorded in job_runs, logged (job.started, job.completed, job.failed) and
counted in metrics. `archiver run` keeps one loop per job (Scheduler); `archiver jobs run NAME`
and the one-shot commands run a job in their own process under the same lease (Runner).

A scheduled time ("slot") is claimed once across replicas: the lease row remembers the last
slot claimed. A run whose holder died is marked `interrupted` by the next claimant and runs
again at once; a run that failed waits for the next slot. A lease saves duplicate work, it is
not what keeps data correct (every job's steps are safe to repeat and to run twice at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog
from asyncpg.pool import PoolConnectionProxy
from croniter import croniter

from consumer import exceptions, health, metrics, queries, settings, terminal, times
from consumer.settings import Settings

log = structlog.get_logger("consumer.jobs")

Counts = dict[str, Any]
Connection = asyncpg.Connection | PoolConnectionProxy
CHECK_EVERY_S = 30.0  # how often a waiting loop looks at the table (peers' runs, health)
RETRY_CHECK_S = 10.0  # after the table could not be read
FINISH_WITHIN_S = 5.0  # recording the end of a run interrupted by shutdown
STATUSES = ("ok", "failed", "interrupted")


class LeaseLostError(exceptions.ArchiverError):
    """The job's lease could not be renewed in time, or another process took it over."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a job's coroutine gets for one run. `started_at` is PostgreSQL's clock when the
    run was claimed (the run's start); `counts` is its progress so far, saved in job_runs with
    every renewal of the lease."""

    job: str
    run_id: int
    started_at: datetime
    trigger: str
    settings: Settings
    pool: asyncpg.Pool
    counts: Counts = field(default_factory=dict)


Work = Callable[[Context], Coroutine[Any, Any, Counts]]


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: `schedule` is a cron expression in UTC, or `off`."""

    name: str
    schedule: str
    work: Work
    summary: str

    @property
    def scheduled(self) -> bool:
        return self.schedule.lower() not in settings.OFF


def latest_slot(schedule: str, now: datetime) -> datetime | None:
    """The latest scheduled time at or before `now` (None for an unscheduled job)."""
    if schedule.lower() in settings.OFF:
        return None
    slot: datetime = croniter(schedule, now + timedelta(microseconds=1)).get_prev(datetime)
    return slot


def next_slot(schedule: str, now: datetime) -> datetime | None:
    """The first scheduled time after `now`."""
    if schedule.lower() in settings.OFF:
        return None
    slot: datetime = croniter(schedule, now).get_next(datetime)
    return slot


def one(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row of a statement that always returns one."""
    if row is None:
        raise exceptions.ArchiverError("the database returned no row where one was expected")
    return row


def holder_name() -> str:
    """This process, as a lease holder: host, pid and a token unique to the process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- the claim -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    run_id: int
    started_at: datetime
    interrupted: int | None  # the run of a dead holder this claim found (marked interrupted)


@dataclass(frozen=True, slots=True)
class Busy:
    holder: str
    until: datetime


async def claim(
    conn: Connection,
    job: str,
    holder: str,
    lease_s: float,
    trigger: str,
    slot: datetime | None,
) -> Claimed | Busy | None:
    """Take the job's lease and start a run, in one transaction. Busy: another process holds
    the lease. None: `slot` was already claimed and its run finished (nothing to do)."""
    async with conn.transaction():
        await conn.execute(queries.get("job_ensure"), job)
        row = one(await conn.fetchrow(queries.get("job_lock"), job))
        if row["held"]:
            return Busy(row["holder"], row["expires_at"])
        dead = row["run_id"]
        last = row["last_slot"]
        if slot is not None and dead is None and last is not None and last >= slot:
            return None
        if dead is not None:
            await conn.execute(queries.get("job_interrupted"), dead)
        run = one(await conn.fetchrow(queries.get("job_run_start"), job, trigger, holder, slot))
        lease = timedelta(seconds=lease_s)
        await conn.execute(queries.get("job_take"), job, holder, lease, run["id"], slot)
    return Claimed(run["id"], run["started_at"], dead)


# --- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request to run a job ended. `skipped`: another process held its lease."""

    job: str
    status: str  # ok | failed | interrupted | skipped
    run_id: int | None = None
    counts: Counts = field(default_factory=dict)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    holder: str | None = None
    until: datetime | None = None

    def as_item(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "counts": self.counts,
            "error": self.error,
            "held_by": self.holder,
            "held_until": self.until,
        }


def describe(outcome: Outcome) -> str:
    """One line for people about a run that did not complete (skipped or failed)."""
    if outcome.status == "skipped" and outcome.until is not None:
        return (f"skipped: job {outcome.job} is running on {outcome.holder} (its lease runs"
                f" until {times.text(outcome.until)})")  # fmt: skip
    return f"job {outcome.job} {outcome.status} (run {outcome.run_id}): {outcome.error}"


def render_counts(counts: Counts, out: Any) -> None:
    """A completed run's counts for people: one `name  value` line each."""
    terminal.fields(
        out, [(k.replace("_", " "), terminal.cell(_flat(v))) for k, v in counts.items()]
    )


def _flat(value: Any) -> Any:
    return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else value


def error_text(exc: BaseException) -> str:
    """An error for job_runs and logs: its type and message, never a payload (jobs read no
    message content), cut to a line's length."""
    return f"{type(exc).__name__}: {exc}"[:500]


class Runner:
    """Runs jobs in this process, each under its lease, recorded in job_runs."""

    def __init__(self, pool: asyncpg.Pool, s: Settings, holder: str | None = None) -> None:
        self.pool = pool
        self.settings = s
        self.holder = holder or holder_name()

    async def run(
        self, job: Job, trigger: str = "manual", slot: datetime | None = None
    ) -> Outcome | None:
        """Run `job` now if its lease is free (None: `slot` is already done)."""
        async with self.pool.acquire() as conn:
            got = await claim(conn, job.name, self.holder, self.settings.job_lease, trigger, slot)
        if got is None:
            return None
        if isinstance(got, Busy):
            log.info("job.skipped", job=job.name, held_by=got.holder, until=got.until.isoformat())
            return Outcome(job.name, "skipped", holder=got.holder, until=got.until)
        if got.interrupted is not None:
            metrics.JOB_RUNS.labels(job_name=job.name, status="interrupted").inc()
            log.warning("job.interrupted", job=job.name, run_id=got.interrupted)
        ctx = Context(job.name, got.run_id, got.started_at, trigger, self.settings, self.pool)
        return await self._execute(job, ctx)

    async def _execute(self, job: Job, ctx: Context) -> Outcome:
        log.info("job.started", job=job.name, run_id=ctx.run_id, trigger=ctx.trigger)
        try:
            counts = await self._guarded(job, ctx)
        except asyncio.CancelledError:
            stopped = self._finish(ctx, "interrupted", ctx.counts, "stopped: the process shut down")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(stopped), FINISH_WITHIN_S)
            raise
        except Exception as exc:
            outcome = await self._finish(ctx, "failed", ctx.counts, error_text(exc))
            log.error("job.failed", job=job.name, run_id=ctx.run_id, error=outcome.error,
                      seconds=outcome.seconds)  # fmt: skip
            return outcome
        outcome = await self._finish(ctx, "ok", counts, None)
        log.info("job.completed", job=job.name, run_id=ctx.run_id, seconds=outcome.seconds,
                 counts=_headline(counts))  # fmt: skip
        return outcome

    async def _guarded(self, job: Job, ctx: Context) -> Counts:
        """The job's work while a keeper renews the lease; the work is cancelled if the lease
        is lost (another process may then run the job)."""
        work = asyncio.create_task(job.work(ctx), name=f"job:{job.name}:work")
        keeper = asyncio.create_task(self._keep_lease(ctx), name=f"job:{job.name}:lease")
        try:
            done, _ = await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, keeper):
                task.cancel()
            await asyncio.gather(work, keeper, return_exceptions=True)
        if work in done:
            return work.result()
        raise keeper.exception() or LeaseLostError()

    async def _keep_lease(self, ctx: Context) -> None:
        """Renew every third of the lease (saving the counts so far); raise LeaseLostError
        when the lease is gone or could not be renewed before it ran out."""
        lease = self.settings.job_lease
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            kept: bool | None
            try:
                kept = await self._renew(ctx, lease)
            except Exception as exc:  # e.g. PostgreSQL unreachable: try again until it runs out
                log.warning("job.lease_not_renewed", job=ctx.job, error=error_text(exc))
                kept = None if time.monotonic() - renewed < 0.8 * lease else False
            if kept is False:
                raise LeaseLostError(f"lost the lease of job {ctx.job!r}: it is not renewed")
            if kept:
                renewed = time.monotonic()

    async def _renew(self, ctx: Context, lease: float) -> bool:
        async with self.pool.acquire() as conn:
            found = await conn.fetchval(
                queries.get("job_renew"), ctx.job, self.holder, timedelta(seconds=lease),
                _json(ctx.counts),
            )  # fmt: skip
        return found is not None

    async def _finish(
        self, ctx: Context, status: str, counts: Counts, error: str | None
    ) -> Outcome:
        """Record the run's end and free the lease; the metrics. If the end cannot be
        recorded, the lease runs out and the next claimant marks the run interrupted."""
        finished: datetime | None = None
        seconds: float | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = one(
                    await conn.fetchrow(
                        queries.get("job_run_finish"), ctx.run_id, status, _json(counts), error
                    )
                )
                await conn.execute(queries.get("job_release"), ctx.job, self.holder)
            finished, seconds = row["finished_at"], round(row["seconds"], 3)
        except Exception as exc:
            log.error("job.not_recorded", job=ctx.job, run_id=ctx.run_id, error=error_text(exc))
        _count(ctx.job, status, seconds, finished)
        return Outcome(
            ctx.job, status, ctx.run_id, counts, error, ctx.started_at, finished, seconds
        )


def _count(job: str, status: str, seconds: float | None, finished: datetime | None) -> None:
    metrics.JOB_RUNS.labels(job_name=job, status=status).inc()
    if seconds is not None:
        metrics.JOB_DURATION.labels(job_name=job).observe(seconds)
    if status == "ok" and finished is not None:
        metrics.JOB_LAST_SUCCESS.labels(job_name=job).set(finished.timestamp())


def _json(counts: Counts) -> str:
    return orjson.dumps(counts, default=str).decode()


def _headline(counts: Counts) -> Counts:
    """The scalar counts of a run, for its log line (lists stay in job_runs)."""
    return {k: v for k, v in counts.items() if isinstance(v, int | float | str | bool)}


# --- what the table says of each job -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """A job's lease and runs as job_runs holds them, at PostgreSQL's `now`."""

    job: Job
    row: dict[str, Any]

    @property
    def now(self) -> datetime:
        now: datetime = self.row["now"]
        return now

    @property
    def running(self) -> bool:
        return bool(self.row["held"])

    @property
    def interrupted(self) -> bool:
        """A run was going on and its holder's lease ran out."""
        return not self.running and self.row["running_id"] is not None

    def due(self) -> datetime | None:
        """The slot to run now: the latest scheduled time not yet claimed, or the slot of an
        interrupted run (run again at once). None: nothing to do now."""
        latest = latest_slot(self.job.schedule, self.now)
        if latest is None or self.running:
            return None
        last = self.row["last_slot"]
        if self.interrupted:
            return last or latest
        return latest if last is None or last < latest else None

    def next_run(self) -> datetime | None:
        """When the job runs next: a due slot (overdue), else the next scheduled time."""
        return self.due() or next_slot(self.job.schedule, self.now)

    def health(self) -> health.JobHealth:
        r = self.row
        upcoming = self.next_run()
        return health.JobHealth(
            status=r["finished_status"],
            finished_at=_ts(r["finished_at"]),
            error=r["finished_error"],
            running=self.running,
            next_run_at=_ts(upcoming),
            last_success_at=_ts(r["last_success_at"]),
        )

    def as_item(self) -> dict[str, Any]:
        """For `archiver jobs`: schedule, last run, status and next run."""
        r = self.row
        return {
            "job": self.job.name,
            "summary": self.job.summary,
            "schedule": self.job.schedule if self.job.scheduled else "off",
            "running": self.running,
            "held_by": r["holder"] if self.running else None,
            "held_until": r["expires_at"] if self.running else None,
            "last_run": _last_run(r),
            "status": r["last_status"],
            "last_success_at": r["last_success_at"],
            "next_run_at": self.next_run(),
            "due_now": self.due() is not None,
        }


def _next(item: Mapping[str, Any]) -> Any:
    return "due now" if item["due_now"] else item["next_run_at"]


def _status(item: Mapping[str, Any]) -> Any:
    if item["running"]:
        return f"running on {item['held_by']}"
    return item["status"] or "never run"


COLUMNS = [
    terminal.column("job", "job", "id"),
    terminal.column("schedule", "schedule"),
    terminal.Column("last run", lambda i: (i["last_run"] or {}).get("started_at"), "time"),
    terminal.Column("status", _status),
    terminal.Column("next run", _next, "time"),
    terminal.Column("error", lambda i: (i["last_run"] or {}).get("error"), "prose"),
]


def _last_run(r: dict[str, Any]) -> dict[str, Any] | None:
    if r["last_id"] is None:
        return None
    return {
        "id": r["last_id"],
        "trigger": r["last_trigger"],
        "started_at": r["last_started_at"],
        "finished_at": r["last_finished_at"],
        "status": r["last_status"],
        "counts": orjson.loads(r["last_counts"]),
        "error": r["last_error"],
    }


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


async def views(conn: Connection, jobs: Sequence[Job]) -> list[View]:
    """Every job's lease and runs, in the order given."""
    by_name = {job.name: job for job in jobs}
    rows = await conn.fetch(queries.get("job_states"), list(by_name))
    found = {row["job"]: View(by_name[row["job"]], dict(row)) for row in rows}
    return [found[job.name] for job in jobs]


def publish(view: View, state: health.State | None) -> None:
    """What every replica reports of a job, whichever ran it: health and gauges."""
    seen = view.health()
    name = view.job.name
    if state is not None:
        state.jobs[name] = seen
    metrics.JOB_FAILING.labels(job_name=name).set(1 if seen.failed else 0)
    if seen.next_run_at is not None:
        metrics.JOB_NEXT_RUN.labels(job_name=name).set(seen.next_run_at)
    if seen.last_success_at is not None:
        metrics.JOB_LAST_SUCCESS.labels(job_name=name).set(seen.last_success_at)


# --- the loops of `archiver run` -----------------------------------------------------------------


class Scheduler:
    """One loop per scheduled job: wait for its next slot (by PostgreSQL's clock), run it if no
    replica has, report what job_runs says meanwhile."""

    def __init__(
        self,
        runner: Runner,
        jobs: Sequence[Job],
        state: health.State | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.runner = runner
        self.jobs = list(jobs)
        self.state = state
        self.ready = ready
        for job in self.jobs:
            for status in STATUSES:
                metrics.JOB_RUNS.labels(job_name=job.name, status=status)

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        return {f"job:{job.name}": _bound(self.keep, job) for job in self.jobs if job.scheduled}

    async def keep(self, job: Job) -> None:
        """Forever (once `ready`, the schema checked): check, run when due, sleep. A failure to
        read the table is logged and retried; it never ends the loop (the monitor would stop
        the archiver)."""
        if self.ready is not None:
            await self.ready.wait()
        while True:
            try:
                pause = await self.tick(job)
            except Exception as exc:
                log.warning("job.check_failed", job=job.name, error=error_text(exc))
                pause = RETRY_CHECK_S
            await asyncio.sleep(pause)

    async def tick(self, job: Job) -> float:
        """Run the job if it is due; the pause until the next look."""
        async with self.runner.pool.acquire() as conn:
            (view,) = await views(conn, [job])
        publish(view, self.state)
        slot = view.due()
        if slot is None:
            upcoming = view.next_run()
            wait = (upcoming - view.now).total_seconds() if upcoming else CHECK_EVERY_S
            return max(0.0, min(CHECK_EVERY_S, wait))
        await self.runner.run(job, "schedule", slot)
        return 0.0


def _bound(
    keep: Callable[[Job], Coroutine[Any, Any, None]], job: Job
) -> Callable[[], Coroutine[Any, Any, None]]:
    return lambda: keep(job)
