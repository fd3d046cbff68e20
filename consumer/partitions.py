"""The monthly partitions of conversation_history: listed with their bounds and sizes, created
ahead by the `partitions` job (so that archiving never runs DDL at a month boundary), and
detached and dropped for retention.

Dropping needs the table's owner, which the archiver's role is not. Two ways, chosen by
settings:

* ARCHIVER_OWNER_DATABASE_URL set: `DETACH PARTITION ... CONCURRENTLY` over that connection
  (it cannot run in a transaction block, so not in a function). Archiving never waits on it;
  the detach waits for transactions older than itself. Then the detached table is dropped.
* unset: archiver_drop_partition() (SECURITY DEFINER, owned by the migration owner) detaches
  and drops in one transaction. A plain DETACH takes an ACCESS EXCLUSIVE lock on
  conversation_history, so archive batches queue behind it: its wait for the lock is bounded
  by ARCHIVER_DETACH_LOCK_TIMEOUT and retried ARCHIVER_DETACH_ATTEMPTS times with a growing,
  jittered pause; if the lock never comes, the month is left to batched deletes.

Either way the function refuses any month that is not wholly in the past, and drops nothing
if a tenant the caller did not allow has rows in the month (archived since the plan): the
partition then stays (or is attached again). A drop interrupted at any point (a partition
detach pending, or detached and not dropped) is finished by the next retention run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from consumer import jobs, queries, terminal
from consumer.settings import Settings

log = structlog.get_logger("consumer.partitions")


@dataclass(frozen=True, slots=True)
class Partition:
    """A monthly table of conversation_history: [lower, upper) in UTC."""

    name: str
    state: str  # attached | detach pending | detached
    lower: datetime
    upper: datetime
    bytes: int
    estimated_rows: int

    @property
    def month(self) -> date:
        return self.lower.astimezone(UTC).date().replace(day=1)

    def as_item(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "month": self.month.strftime("%Y-%m"),
            "state": self.state,
            "lower": self.lower,
            "upper": self.upper,
            "bytes": self.bytes,
            "estimated_rows": self.estimated_rows,
        }


COLUMNS = [
    terminal.column("name", "name", "id"),
    terminal.column("from (UTC)", "lower", "time"),
    terminal.column("to", "upper", "time"),
    terminal.Column("size", lambda row: size_text(row["bytes"]), "number"),
    terminal.column("rows (est.)", "estimated_rows", "number", drop=1),
    terminal.column("state", "state"),
]


def size_text(octets: int) -> str:
    """Bytes for people: 928.0 kB, 1.2 GB."""
    value = float(octets)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


async def listing(conn: jobs.Connection) -> list[Partition]:
    """Every monthly table, oldest first, attached or left over by an interrupted drop."""
    rows = await conn.fetch(queries.get("partitions_list"))
    return [Partition(**dict(row)) for row in rows]


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of `moment`'s month."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(moment: datetime, months: int) -> datetime:
    total = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=total // 12, month=total % 12 + 1)


# --- the `partitions` job ------------------------------------------------------------------------


async def maintain(ctx: jobs.Context) -> jobs.Counts:
    """Create this month's partition and the next ARCHIVER_PARTITIONS_AHEAD months' (those
    that exist are left alone: no DDL), and report tables an interrupted drop left behind
    (the next retention run finishes them)."""
    first = month_start(ctx.started_at)
    months = [add_months(first, i) for i in range(ctx.settings.partitions_ahead + 1)]
    async with ctx.pool.acquire() as conn:
        before = {p.name for p in await listing(conn)}
        for moment in months:
            await conn.fetchval(queries.get("ensure_partition"), moment)
        after = await listing(conn)
    created = sorted({p.name for p in after} - before)
    ready = [p.month.strftime("%Y-%m") for p in after if p.state == "attached" and p.lower >= first]
    leftovers = [p.name for p in after if p.state != "attached"]
    return {"created": created, "months_ready": ready, "interrupted_drops": leftovers}


# --- dropping ------------------------------------------------------------------------------------


class Dropper:
    """Detach and drop past months' partitions, concurrently when an owner connection is
    configured, otherwise under a short lock timeout (see the module's docstring)."""

    def __init__(self, pool: asyncpg.Pool, s: Settings) -> None:
        self.pool = pool
        self.settings = s

    @property
    def how(self) -> str:
        return method(self.settings)

    async def drop(self, partition: Partition, allowed: Sequence[str]) -> str:
        """'dropped' once the partition is gone; 'kept' if a tenant not in `allowed` has rows
        in it (archived since the caller looked); 'postponed' if a plain DETACH never got its
        lock. The month is first recorded in retention_dropped: retention settles the
        `conversations` rows of conversations that started in it."""
        async with self.pool.acquire() as conn:
            await conn.execute(queries.get("retention_dropping"), partition.month)
        if self.settings.owner_database_url and partition.state == "attached":
            await self._detach_concurrently(partition.name)
        try:
            result = await self._drop_locked(partition.name, allowed)
        except asyncpg.LockNotAvailableError:
            result = "postponed"
        log.info("partition.drop", partition=partition.name, how=self.how, result=result)
        return "dropped" if result == "absent" else result

    async def _detach_concurrently(self, name: str) -> None:
        conn = await asyncpg.connect(
            self.settings.owner_database_url, timeout=self.settings.db_timeout
        )
        try:
            statement = await conn.fetchval(queries.get("partition_detach_concurrently"), name)
            await conn.execute(statement, timeout=self.settings.job_timeout)
        finally:
            await conn.close()
        log.info("partition.detached", partition=name, how="concurrently")

    async def _drop_locked(self, name: str, allowed: Sequence[str]) -> str:
        """archiver_drop_partition under lock_timeout, retried on a lock not obtained."""
        wait_ms = max(1, int(self.settings.detach_lock_timeout * 1000))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(asyncpg.LockNotAvailableError),
            stop=stop_after_attempt(self.settings.detach_attempts),
            wait=wait_random_exponential(multiplier=0.5, max=10),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with self.pool.acquire() as conn:
                    result: str = await conn.fetchval(
                        queries.get("partition_drop"), name, list(allowed), wait_ms
                    )
                    return result
        raise AssertionError("unreachable: tenacity reraises")


def method(s: Settings) -> str:
    """How partitions are dropped with these settings."""
    return "concurrently" if s.owner_database_url else "locked"
