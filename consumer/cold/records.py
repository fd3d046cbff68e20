"""The archived_partitions rows: one per exported version of a tenant's month."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from consumer import jobs, queries, terminal

Connection = jobs.Connection


@dataclass(frozen=True, slots=True)
class Stats:
    """A tenant's month as PostgreSQL holds it now (or in an export's snapshot)."""

    rows: int
    digest: str
    min_timestamp: datetime | None
    max_timestamp: datetime | None


def bounds(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    lower = datetime(month.year, month.month, 1, tzinfo=UTC)
    after = lower + timedelta(days=32)
    return lower, datetime(after.year, after.month, 1, tzinfo=UTC)


async def stats(conn: Connection, tenant: str, month: date) -> Stats:
    lower, upper = bounds(month)
    row = jobs.one(await conn.fetchrow(queries.get("cold_month_stats"), tenant, lower, upper))
    return Stats(row["rows"], row["digest"], row["min_timestamp"], row["max_timestamp"])


def covers(record: asyncpg.Record | None, now: Stats) -> bool:
    """Whether an export holds exactly the rows PostgreSQL has now."""
    return record is not None and (record["row_count"], record["content_digest"]) == (
        now.rows,
        now.digest,
    )


async def current(conn: Connection, tenant: str, month: date) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(queries.get("cold_current"), tenant, month)
    return row


async def listing(
    conn: Connection, tenant: str | None = None, month: date | None = None, every: bool = False
) -> list[asyncpg.Record]:
    """The current versions (every version with `every`), by tenant and month."""
    rows: list[asyncpg.Record] = await conn.fetch(queries.get("cold_list"), tenant, month, every)
    return rows


def as_item(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "tenant": row["tenant_id"],
        "month": row["month"].strftime("%Y-%m"),
        "version": row["version"],
        "current": row["is_current"],
        "export_id": row["export_id"],
        "archive_path": row["archive_path"],
        "manifest_path": row["manifest_path"],
        "format": row["format"],
        "compression": row["compression"],
        "files": row["files"],
        "rows": row["row_count"],
        "compressed_size": row["compressed_size"],
        "sha256": row["sha256"],
        "content_digest": row["content_digest"],
        "min_timestamp": row["min_timestamp"],
        "max_timestamp": row["max_timestamp"],
        "exported_at": row["exported_at"],
        "verified_at": row["verified_at"],
        "verify_error": row["verify_error"],
    }


COLUMNS = [
    terminal.column("tenant", "tenant", "id"),
    terminal.column("month", "month"),
    terminal.column("version", "version", "number", drop=1),
    terminal.column("format", "format"),
    terminal.column("compression", "compression", drop=2),
    terminal.column("rows", "rows", "number"),
    terminal.column("bytes", "compressed_size", "number", drop=1),
    terminal.column("exported", "exported_at", "time", drop=2),
    terminal.column("verified", "verified_at", "time"),
    terminal.column("error", "verify_error", "prose"),
]
