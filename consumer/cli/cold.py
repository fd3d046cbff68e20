"""Commands of the cold tier (consumer/cold/): export, verify, ls, restore, query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import click

from consumer import exceptions, partitions, settings, terminal
from consumer.cli import app, options
from consumer.cli.exits import ExitCode
from consumer.cold import layout, records

if TYPE_CHECKING:
    from consumer.cold.storage import Storage

# The modules that load pyarrow and DuckDB are imported by the commands that use them, so
# that every other `archiver` command starts without them.

T = TypeVar("T")
QUERY_LIMIT = 1000


def _run(s: settings.Settings, work: Callable[[asyncpg.Connection, Storage], Awaitable[T]]) -> T:
    """`work` on one connection and the cold tier; a storage failure names ARCHIVER_COLD_URL."""
    from consumer.cold import gate, storage

    where = gate.open_storage(s)

    async def guarded(conn: asyncpg.Connection) -> T:
        try:
            return await work(conn, where)
        except OSError as exc:
            raise storage.failure(where, exc) from exc

    return app.run_db(s, guarded)


def _month(value: str | None) -> date | None:
    from consumer.cold import gate

    return None if value is None else gate.month_of(value)


@app.main.group("cold")
def cold_group() -> None:
    """The cold tier: months of conversation_history as Parquet or JSON lines files
    (ARCHIVER_COLD_FORMAT) on a local volume or S3 (ARCHIVER_COLD_URL), verified, restorable,
    queryable in place with DuckDB."""


@cold_group.command("export")
@click.option("--month", metavar="YYYY-MM", help="Export this month.")
@click.option(
    "--before", metavar="DATE", help="Export every whole month before this date (YYYY-MM-DD)."
)
@click.option("--tenant", help="Only this tenant (default: every tenant with rows in the month).")
@options.json_option
@options.settings_options("cold")
def cold_export_command(
    month: str | None, before: str | None, tenant: str | None, out: terminal.Output, **values: Any
) -> ExitCode:
    """Export months to the cold tier and verify what was written: a month unchanged since its
    current version is skipped; a changed one becomes a new version. Exit 1 if a verify fails."""
    if (month is None) == (before is None):
        raise exceptions.UsageError("give exactly one of --month YYYY-MM and --before DATE")
    s = app.load_settings(values)

    from consumer.cold import gate

    async def work(conn: asyncpg.Connection, where: Storage) -> dict[str, Any]:
        months = await _months(conn, _month(month), _date(before), tenant)
        return await gate.export_months(conn, where, months, gate.limits(s))

    report = _run(s, work)
    out.document(report | {"next": None}, lambda console: gate.render(report, console))
    return ExitCode.FAILED if report["failed_verify"] else ExitCode.OK


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        raise exceptions.UsageError(f"--before: not a date: {value!r} (use YYYY-MM-DD)") from None


async def _months(
    conn: asyncpg.Connection, month: date | None, before: datetime | None, tenant: str | None
) -> list[tuple[str, date]]:
    """(tenant, month) pairs to export: the month given, or every month wholly before a date."""
    from consumer.cold import gate

    if month is not None:
        wanted = [month]
    else:
        listed = await partitions.listing(conn)
        wanted = [p.month for p in listed if before is not None and p.upper <= before]
    found: list[tuple[str, date]] = []
    for each in wanted:
        tenants = [tenant] if tenant is not None else await gate.tenants_in(conn, each)
        found.extend((t, each) for t in tenants)
    return found


@cold_group.command("verify")
@click.option("--tenant", help="Only this tenant's months.")
@click.option("--month", metavar="YYYY-MM", help="Only this month.")
@options.json_option
@options.settings_options("cold")
def cold_verify_command(
    tenant: str | None, month: str | None, out: terminal.Output, **values: Any
) -> ExitCode:
    """Read every current export back from storage: files present, SHA-256, size, row count and
    content digest as PostgreSQL computed it at export. Exit 1 if one fails."""
    from consumer.cold import verify

    s = app.load_settings(values)
    wanted = _month(month)
    checked = _run(s, lambda conn, where: verify.verify(conn, where, tenant, wanted))
    out.items([c.as_item() for c in checked], VERIFY_COLUMNS, None, "no export to verify")
    return ExitCode.FAILED if any(not c.ok for c in checked) else ExitCode.OK


VERIFY_COLUMNS = [
    terminal.column("tenant", "tenant", "id"),
    terminal.column("month", "month"),
    terminal.column("version", "version", "number"),
    terminal.column("ok", "ok"),
    terminal.column("problem", "problem", "prose"),
]


@cold_group.command("ls")
@click.option("--tenant", help="Only this tenant's months.")
@click.option("--month", metavar="YYYY-MM", help="Only this month.")
@click.option("--all-versions", is_flag=True, help="Older versions too, not only the current.")
@options.json_option
@options.settings_options("cold")
def cold_ls_command(
    tenant: str | None, month: str | None, all_versions: bool, out: terminal.Output,
    **values: Any,
) -> None:  # fmt: skip
    """The exported months (archived_partitions): format, rows, size, when exported and
    verified."""
    s = app.load_settings(values)
    wanted = _month(month)
    found = app.run_db(s, lambda conn: records.listing(conn, tenant, wanted, all_versions))
    out.items([records.as_item(r) for r in found], records.COLUMNS, None, "nothing exported")


@cold_group.command("restore")
@click.option("--tenant", required=True, help="The tenant whose month comes back.")
@click.option("--month", required=True, metavar="YYYY-MM", help="The month.")
@options.json_option
@options.settings_options("cold")
def cold_restore_command(tenant: str, month: str, out: terminal.Output, **values: Any) -> None:
    """Put a month's rows back into conversation_history from its current export (verified
    first); rows still there are skipped, so it can be repeated."""
    from consumer.cold import gate, restore

    s = app.load_settings(values)
    wanted = gate.month_of(month)
    inserted, skipped = _run(s, lambda conn, where: restore.restore(conn, where, tenant, wanted))
    item = {"tenant": tenant, "month": layout.month_text(wanted), "restored": inserted,
            "skipped": skipped}  # fmt: skip
    line = f"restored {inserted} rows of {layout.month_text(wanted)}; {skipped} were still there"
    out.summary(item, line)


@cold_group.command("query")
@click.argument("sql")
@click.option("--limit", type=click.IntRange(1, 100_000), default=QUERY_LIMIT, show_default=True,
              help="Rows shown at most.")  # fmt: skip
@options.json_option
@options.settings_options("cold")
def cold_query_command(sql: str, limit: int, out: terminal.Output, **values: Any) -> None:
    """Run SQL with DuckDB over the cold tier in place: the view `conversation_history` holds
    every exported row, with `tenant_id` and `month` (YYYY-MM) from the files' paths."""
    from consumer.cold import gate, query, storage

    s = app.load_settings(values)
    where = gate.open_storage(s)
    try:
        answer = query.run(where, sql, limit)
    except OSError as exc:
        raise storage.failure(where, exc) from exc
    columns = [
        terminal.column(c, c, "prose" if c == "message_content" else "text") for c in answer.columns
    ]
    if answer.truncated:
        terminal.note(f"only the first {limit} rows (--limit)")
    out.items(answer.rows, columns, None, "no rows")
