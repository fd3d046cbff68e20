"""Retention's releases: an `export` tenant's month goes only while its cold copy covers it.

The plan asks the cold tier (retention.ExportGate) whether a verified export covers a month;
the deletes come later, and a late checkpoint may archive a row into that month meanwhile. A
release closes that window (sql/0012_retention_releases.sql has the protocol):

1. open: once every archive batch in flight has committed, record the release; later batches
   mark it late as they insert a new row of that tenant's month;
2. confirm: the month's rows now against the current verified export (count and digest);
3. delete in batches, each stopping at a late release, or drop the partition (which checks it);
4. close.

PostgreSQL enforces it: the archiver's role cannot delete an `export` tenant's rows otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import asyncpg

from consumer import queries


@dataclass(frozen=True, slots=True)
class Release:
    """An open release of a tenant's month; `refused` says why its rows must stay, if so."""

    id: int
    tenant: str
    month: date
    refused: str | None


async def open_confirmed(pool: asyncpg.Pool, tenant: str, month: date) -> Release:
    """Open a release and confirm it, each in a transaction of its own (the order matters)."""
    async with pool.acquire() as conn:
        opened: int = await conn.fetchval(queries.get("release_open"), tenant, month)
    async with pool.acquire() as conn:
        refused: str | None = await conn.fetchval(queries.get("release_confirm"), opened)
    return Release(opened, tenant, month, refused and f"export: {refused}")


async def close(pool: asyncpg.Pool, release: Release) -> None:
    async with pool.acquire() as conn:
        await conn.execute(queries.get("release_close"), release.id)


@contextlib.asynccontextmanager
async def held(pool: asyncpg.Pool, tenant: str, month: date) -> AsyncIterator[Release]:
    """A confirmed (or refused) release, closed on the way out whatever happens."""
    release = await open_confirmed(pool, tenant, month)
    try:
        yield release
    finally:
        await close(pool, release)
