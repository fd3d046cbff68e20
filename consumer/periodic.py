"""The periodic jobs `archiver run` hosts: a name, a schedule setting and a coroutine each.

A new job (the cold tier's export, erasure) adds one entry here; its coroutine takes a
jobs.Context and returns its counts, and the machinery of consumer/jobs.py does the rest
(lease, job_runs, logs, metrics, health, `archiver jobs`).
"""

from __future__ import annotations

import functools

from consumer import erasure, exceptions, jobs, partitions, retention
from consumer.settings import Settings


def registered(s: Settings) -> tuple[jobs.Job, ...]:
    """Every periodic job, in the order `archiver jobs` lists them."""
    return (
        jobs.Job(
            "partitions",
            s.partitions_schedule,
            partitions.maintain,
            "creates the coming months' partitions ahead of time",
        ),
        jobs.Job(
            "retention",
            s.retention_schedule,
            functools.partial(retention.apply, gate=export_gate(s)),
            "deletes what each tenant's retention policy lets go",
        ),
        jobs.Job(
            "cold",
            s.cold_schedule if s.cold_url else "off",
            _cold_job,
            "exports and verifies past months of `export` policies to the cold tier",
        ),
        jobs.Job(
            "erasure",
            s.erasure_schedule,
            erasure.resume_unfinished,
            "resumes unfinished erasures (a crashed `archiver erase`) to completion",
        ),
    )


async def _cold_job(ctx: jobs.Context) -> jobs.Counts:
    """The `cold` job; pyarrow and DuckDB load when it runs, not with every command."""
    from consumer.cold import gate as cold

    return await cold.run_job(ctx)


def export_gate(s: Settings, export_first: bool = True) -> retention.ExportGate:
    """What retention's `--then export` asks: the cold tier if ARCHIVER_COLD_URL is set (it
    exports and verifies a month first unless `export_first` is off: a dry run), else
    nothing is ever verified and `export` keeps every row."""
    if s.cold_url is None:
        return retention.NO_COLD_TIER
    from consumer.cold import gate as cold  # pyarrow loads only where a cold tier is configured

    return cold.ColdGate(cold.open_storage(s), cold.limits(s), export_first)


def named(s: Settings, name: str) -> jobs.Job:
    for job in registered(s):
        if job.name == name:
            return job
    known = ", ".join(job.name for job in registered(s))
    raise exceptions.ConfigError(f"no job named {name!r}; the jobs are: {known}")
