"""The periodic jobs' machinery against a real PostgreSQL: leases by PostgreSQL's clock, one run
per scheduled time across replicas, runs recorded, failures retried at the next schedule,
crashed holders' runs taken over, lost leases, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from consumer import health, jobs, metrics
from tests.conftest import MakeSettings
from tests.waiting import eventually

YEARLY = "0 0 1 1 *"  # a slot that does not change while a test runs


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The archiver's connections: its least-privilege login role (archiver_writer)."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    yield created
    await created.close()


class Probe:
    """A job whose runs the test controls: it records them, may wait or fail."""

    def __init__(self, name: str = "probe", schedule: str = YEARLY) -> None:
        self.runs: list[jobs.Context] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail: Exception | None = None
        self.job = jobs.Job(name, schedule, self.work, "a test job")

    async def work(self, ctx: jobs.Context) -> jobs.Counts:
        self.runs.append(ctx)
        ctx.counts["step"] = 1
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {"done": len(self.runs)}


async def runs(db: asyncpg.Connection, job: str = "probe") -> list[dict[str, object]]:
    rows = await db.fetch("SELECT * FROM job_runs WHERE job = $1 ORDER BY id", job)
    return [dict(r) for r in rows]


def counted(job: str, status: str) -> float:
    value = metrics.JOB_RUNS.labels(job_name=job, status=status)._value.get()
    return float(value)


async def test_a_run_is_recorded_with_its_counts_and_frees_the_lease(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe("recorded")
    before = counted("recorded", "ok")
    outcome = await jobs.Runner(pool, make_settings()).run(probe.job)
    assert outcome is not None and outcome.status == "ok"
    assert outcome.counts == {"done": 1}
    (row,) = await runs(db, "recorded")
    assert (row["status"], row["trigger"], row["error"]) == ("ok", "manual", None)
    assert isinstance(row["finished_at"], datetime) and isinstance(row["started_at"], datetime)
    assert row["finished_at"] >= row["started_at"]
    assert probe.runs[0].started_at == row["started_at"]  # the run's start: PostgreSQL's clock
    lease = await db.fetchrow("SELECT * FROM job_leases WHERE job = 'recorded'")
    assert lease is not None and (lease["holder"], lease["run_id"]) == (None, None)
    assert counted("recorded", "ok") == before + 1
    assert metrics.JOB_LAST_SUCCESS.labels(job_name="recorded")._value.get() > 0


async def test_only_one_process_runs_a_job_at_a_time(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    probe.release.clear()
    s = make_settings()
    first = asyncio.create_task(jobs.Runner(pool, s, "host-a:1").run(probe.job))
    await asyncio.wait_for(probe.started.wait(), 10)
    second = await jobs.Runner(pool, s, "host-b:2").run(probe.job)
    assert second is not None and second.status == "skipped"
    assert second.holder == "host-a:1" and second.until is not None
    probe.release.set()
    done = await first
    assert done is not None and done.status == "ok"
    assert len(probe.runs) == 1 and len(await runs(db)) == 1


async def test_a_scheduled_time_runs_once_across_replicas(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    s = make_settings()
    replicas = [jobs.Scheduler(jobs.Runner(pool, s, f"replica-{i}"), [probe.job]) for i in range(3)]
    await asyncio.gather(*(r.tick(probe.job) for r in replicas))
    await asyncio.gather(*(r.tick(probe.job) for r in replicas))
    rows = await runs(db)
    assert len(rows) == 1 and rows[0]["trigger"] == "schedule" and rows[0]["status"] == "ok"
    lease = await db.fetchrow("SELECT last_slot FROM job_leases WHERE job = 'probe'")
    assert lease is not None and lease["last_slot"] == rows[0]["slot"]
    pause = await replicas[0].tick(probe.job)
    assert 0 < pause <= jobs.CHECK_EVERY_S  # until the next minute, looking again meanwhile


async def test_a_failed_run_shows_in_health_and_waits_for_the_next_schedule(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    probe.fail = RuntimeError("disk full")
    state = health.State(sweep_interval=60, mode="events", redis_ok=True, database_ok=True,
                         subscribed=True, last_sweep_ok_at=time.time() + 3600)  # fmt: skip
    scheduler = jobs.Scheduler(jobs.Runner(pool, make_settings()), [probe.job], state)
    await scheduler.tick(probe.job)
    (row,) = await runs(db)
    assert row["status"] == "failed" and row["error"] == "RuntimeError: disk full"
    assert row["counts"] == '{"step": 1}'  # the progress it had made
    await scheduler.tick(probe.job)  # publishes what the table says; not due again
    assert len(probe.runs) == 1
    assert state.failed_jobs() == ["probe"]
    assert state.status() == "degraded"
    snapshot = state.snapshot()
    assert snapshot["failed_jobs"] == ["probe"]
    assert snapshot["jobs"]["probe"]["error"] == "RuntimeError: disk full"
    assert metrics.JOB_FAILING.labels(job_name="probe")._value.get() == 1
    probe.fail = None
    outcome = await jobs.Runner(pool, make_settings()).run(probe.job)  # by hand, now
    assert outcome is not None and outcome.status == "ok"
    await scheduler.tick(probe.job)
    assert state.failed_jobs() == []
    assert metrics.JOB_FAILING.labels(job_name="probe")._value.get() == 0


async def test_a_dead_holders_run_is_marked_interrupted_and_run_again_at_once(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    """A holder killed mid-run renews nothing: once its lease has run out by PostgreSQL's
    clock, the next look marks its run interrupted and runs the job again, same slot."""
    probe = Probe()
    s = make_settings()
    async with pool.acquire() as conn:
        (view,) = await jobs.views(conn, [probe.job])
        slot = view.due()
        assert slot is not None
        dead = await jobs.claim(conn, "probe", "killed-host:9", 60, "schedule", slot)
    assert isinstance(dead, jobs.Claimed)
    scheduler = jobs.Scheduler(jobs.Runner(pool, s), [probe.job])
    await scheduler.tick(probe.job)
    assert probe.runs == []  # its lease still runs: nobody else runs the job
    await db.execute("UPDATE job_leases SET expires_at = clock_timestamp() - interval '1 s'")
    before = counted("probe", "interrupted")
    await scheduler.tick(probe.job)
    rows = await runs(db)
    assert [r["status"] for r in rows] == ["interrupted", "ok"]
    assert rows[0]["id"] == dead.run_id and "lease" in str(rows[0]["error"])
    assert rows[1]["slot"] == slot
    assert counted("probe", "interrupted") == before + 1


async def test_a_run_that_loses_its_lease_is_stopped(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    probe.release.clear()
    s = make_settings(job_lease="3s")
    task = asyncio.create_task(jobs.Runner(pool, s).run(probe.job))
    await asyncio.wait_for(probe.started.wait(), 10)
    await db.execute("UPDATE job_leases SET holder = 'someone-else' WHERE job = 'probe'")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error is not None and outcome.error.startswith("LeaseLostError")


async def test_the_lease_saves_progress_while_the_job_runs(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    probe.release.clear()
    task = asyncio.create_task(jobs.Runner(pool, make_settings(job_lease="3s")).run(probe.job))
    await asyncio.wait_for(probe.started.wait(), 10)

    async def saved() -> bool:
        return bool(await db.fetchval("SELECT counts ? 'step' FROM job_runs WHERE job = 'probe'"))

    await eventually(saved, timeout=5, what="counts saved by a renewal")
    lease = await db.fetchrow("SELECT expires_at - clock_timestamp() AS left FROM job_leases")
    assert lease is not None and timedelta(0) < lease["left"] <= timedelta(seconds=3)
    probe.release.set()
    await task


async def test_a_run_stopped_by_shutdown_is_recorded_as_interrupted(
    pool: asyncpg.Pool, db: asyncpg.Connection, make_settings: MakeSettings
) -> None:
    probe = Probe()
    probe.release.clear()
    task = asyncio.create_task(jobs.Runner(pool, make_settings()).run(probe.job))
    await asyncio.wait_for(probe.started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = await runs(db)
    assert row["status"] == "interrupted" and "shut down" in str(row["error"])
    lease = await db.fetchrow("SELECT holder FROM job_leases WHERE job = 'probe'")
    assert lease is not None and lease["holder"] is None  # free at once for another replica


async def test_jobs_lists_schedule_last_run_and_next_run(
    pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    probe = Probe(schedule="0 2 * * *")
    idle = Probe("idle", schedule="off")
    await jobs.Runner(pool, make_settings()).run(probe.job)
    async with pool.acquire() as conn:
        listed = [v.as_item() for v in await jobs.views(conn, [probe.job, idle.job])]
    first, second = listed
    assert first["schedule"] == "0 2 * * *" and first["status"] == "ok"
    assert first["last_run"]["trigger"] == "manual"
    assert first["next_run_at"] is not None  # 02:00 UTC: today's if not yet run on schedule
    assert (first["next_run_at"].hour, first["next_run_at"].minute) == (2, 0)
    assert second["schedule"] == "off" and second["next_run_at"] is None
    assert second["last_run"] is None and second["status"] is None
