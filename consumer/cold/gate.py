"""The cold tier in the life of a month: retention's `--then export` gate and the `cold` job.

ColdGate lets retention delete a tenant's month only when the current export of it is
verified and holds exactly the rows PostgreSQL has now (same count, same content digest).
Asked about a month that is not covered (never exported, or rows arrived since: late
checkpoints), it first exports the month (a new version) and verifies it, unless it only
previews (a dry run).

The `cold` job (ARCHIVER_COLD_SCHEDULE) exports and verifies every month wholly before the
current one and wholly past the keep period of each tenant whose policy is `export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import structlog
from rich.text import Text

from consumer import exceptions, jobs, partitions, queries, terminal
from consumer.cold import export, formats, layout, records, storage, verify
from consumer.cold.storage import Storage
from consumer.settings import Settings

log = structlog.get_logger("consumer.cold.gate")


def open_storage(s: Settings) -> Storage:
    if s.cold_url is None:
        raise exceptions.ConfigError(
            "no cold tier: set ARCHIVER_COLD_URL (file:///path or s3://bucket/prefix)"
        )
    return storage.open_url(s.cold_url, s.s3_endpoint_url)


def limits(s: Settings) -> export.Limits:
    fmt = formats.Format(s.cold_format, s.cold_compression)
    return export.Limits(part_rows=s.cold_part_rows, group_bytes=s.cold_group_bytes, format=fmt)


@dataclass(frozen=True, slots=True)
class ColdGate:
    """retention.ExportGate backed by archived_partitions (and the storage, to export first)."""

    where: Storage
    limits: export.Limits
    export_first: bool = True

    async def releasable(
        self, conn: jobs.Connection, tenant: str, month: date, rows: int
    ) -> str | None:
        record = await records.current(conn, tenant, month)
        now = await records.stats(conn, tenant, month)
        if self.export_first and not (_verified(record) and records.covers(record, now)):
            failed = await self._export(conn, tenant, month)
            if failed is not None:
                return failed
            record = await records.current(conn, tenant, month)
            now = await records.stats(conn, tenant, month)
        return _reason(record, now)

    async def _export(self, conn: jobs.Connection, tenant: str, month: date) -> str | None:
        """Export and verify the month; why not, if that failed (its rows then stay, and the
        rest of the retention run goes on)."""
        try:
            await exported_and_verified(conn, self.where, tenant, month, self.limits)
        except (exceptions.ArchiverError, OSError) as exc:
            log.warning("cold.gate_export_failed", month=layout.month_text(month),
                        error=jobs.error_text(exc))  # fmt: skip
            return f"export: exporting it first failed ({jobs.error_text(exc)})"
        return None


def _verified(record: Any) -> bool:
    return record is not None and record["verified_at"] is not None


def _reason(record: Any, now: records.Stats) -> str | None:
    if record is None:
        return "export: no cold copy yet (the next `cold` run exports it)"
    if not records.covers(record, now):
        return "export: rows changed since its cold copy (a new export covers them first)"
    if record["verified_at"] is None:
        return (
            f"export: its cold copy is not verified ({record['verify_error'] or 'not yet checked'})"
        )
    return None


async def exported_and_verified(
    conn: jobs.Connection, where: Storage, tenant: str, month: date, limits: export.Limits
) -> tuple[export.Result, verify.Checked | None]:
    """Export a month (if it changed) and verify a new version at once; an unchanged one too
    if it is not verified (an export killed between its record and its verify, or a verify
    that failed: else nothing would verify it again but `archiver cold verify`)."""
    result = await export.export_month(conn, where, tenant, month, limits)
    if result.status not in ("exported", "unchanged"):
        return result, None
    record = await records.current(conn, tenant, month)
    if record is None or (result.status == "unchanged" and record["verified_at"] is not None):
        return result, None
    return result, await verify.verify_record(conn, where, record)


# --- which months, and the job -------------------------------------------------------------------


async def tenants_in(conn: jobs.Connection, month: date) -> list[str]:
    lower, upper = records.bounds(month)
    return [
        r["tenant_id"] for r in await conn.fetch(queries.get("cold_tenant_months"), lower, upper)
    ]


async def due(conn: jobs.Connection, now: Any) -> list[tuple[str, date]]:
    """Months wholly before the current one and past the keep period of an `export` tenant."""
    this_month = partitions.month_start(now)
    found = []
    for table in await partitions.listing(conn):
        if table.state != "attached" or table.upper > this_month:
            continue
        tenants = await tenants_in(conn, table.month)
        for row in await conn.fetch(queries.get("cold_export_tenants"), tenants):
            if table.upper <= row["cutoff"]:
                found.append((row["tenant_id"], table.month))
    return sorted(found)


@dataclass(slots=True)
class Tally:
    """What an export run did, as its counts."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: export.Result, checked: verify.Checked | None) -> None:
        item = result.as_item() | {"verified": None if checked is None else checked.ok,
                                   "problem": None if checked is None else checked.problem}  # fmt: skip
        self.items.append(item)

    def counts(self) -> jobs.Counts:
        statuses = [i["status"] for i in self.items]
        return {
            "exported": statuses.count("exported"),
            "unchanged": statuses.count("unchanged"),
            "busy": statuses.count("busy"),
            "rows_exported": sum(i["rows"] for i in self.items if i["status"] == "exported"),
            "failed_verify": sum(1 for i in self.items if i["verified"] is False),
            "items": self.items,
        }


async def export_months(
    conn: jobs.Connection, where: Storage, months: list[tuple[str, date]], limits: export.Limits,
    counts: jobs.Counts | None = None,
) -> jobs.Counts:  # fmt: skip
    tally = Tally()
    for tenant, month in months:
        tally.add(*await exported_and_verified(conn, where, tenant, month, limits))
        if counts is not None:
            counts.update({k: v for k, v in tally.counts().items() if k != "items"})
    return tally.counts()


async def run_job(ctx: jobs.Context) -> jobs.Counts:
    """The `cold` job: export and verify every month that is due."""
    where = open_storage(ctx.settings)
    async with ctx.pool.acquire() as conn:
        months = await due(conn, ctx.started_at)
        return await export_months(conn, where, months, limits(ctx.settings), ctx.counts)


COLUMNS = [
    terminal.column("tenant", "tenant", "id"),
    terminal.column("month", "month"),
    terminal.column("status", "status"),
    terminal.column("version", "version", "number", drop=1),
    terminal.column("rows", "rows", "number"),
    terminal.column("bytes", "compressed_size", "number", drop=1),
    terminal.column("verified", "verified"),
    terminal.column("problem", "problem", "prose"),
]


def render(report: jobs.Counts, out: Any) -> None:
    if report["items"]:
        terminal.listing(out, COLUMNS, report["items"])
    terminal.sentence(out, Text(f"exported {report['exported']} month(s) ({report['rows_exported']} rows),"
                                f" unchanged {report['unchanged']}, failed verify {report['failed_verify']}"))  # fmt: skip


def month_of(text: str) -> date:
    """YYYY-MM as the month's first day."""
    try:
        year, month = (int(x) for x in text.split("-"))
        return date(year, month, 1)
    except ValueError:
        raise exceptions.UsageError(f"not a month: {text!r} (use YYYY-MM)") from None
