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
            functools.partial(retention.apply, gate=retention.NO_COLD_TIER),
            "deletes what each tenant's retention policy lets go",
        ),
        jobs.Job(
            "erasure",
            s.erasure_schedule,
            erasure.resume_unfinished,
            "resumes unfinished erasures (a crashed `archiver erase`) to completion",
        ),
    )


def named(s: Settings, name: str) -> jobs.Job:
    for job in registered(s):
        if job.name == name:
            return job
    known = ", ".join(job.name for job in registered(s))
    raise exceptions.ConfigError(f"no job named {name!r}; the jobs are: {known}")
