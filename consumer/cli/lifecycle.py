"""Commands of the warm tier's life cycle: retention, jobs, partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console

from consumer import (
    exceptions,
    jobs,
    partitions,
    periodic,
    policies,
    retention,
    settings,
    store,
    terminal,
)
from consumer.cli import app, exits, options
from consumer.cli.exits import ExitCode

T = TypeVar("T")


# --- retention, periodic jobs and partitions (consumer/retention.py, jobs.py, partitions.py) ---


def _scope(default: bool, tenant: str | None) -> str | None:
    """The tenant, or None for --default: exactly one of the two."""
    if default == (tenant is not None):
        raise exceptions.UsageError("give exactly one of --default and --tenant T")
    if tenant is not None and not tenant:
        raise exceptions.UsageError("--tenant: a tenant id cannot be empty")
    return tenant


def _policy_change(s: settings.Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """A policy change; the archiver's own role (which may only read them) is told whose
    connection it needs."""

    async def owner_only(conn: asyncpg.Connection) -> T:
        try:
            return await work(conn)
        except asyncpg.InsufficientPrivilegeError:
            raise exceptions.ConfigError(
                "changing a retention policy needs the schema owner's connection: give"
                " --database-url / ARCHIVER_DATABASE_URL of the migration owner (the archiver's"
                " own role may only read policies; ops/OPERATIONS.md, Retention)"
            ) from None

    return app.run_db(s, owner_only)


@app.main.group("retention")
def retention_group() -> None:
    """Retention policies per tenant (keep period; then delete or export) and applying them.

    A tenant without its own policy follows the default; with neither, nothing of it is ever
    deleted. `apply` runs under the same lease as the scheduled job."""


@retention_group.command("set")
@click.option("--default", "default", is_flag=True, help="Set the default policy.")
@click.option("--tenant", help="Set this tenant's policy.")
@click.option("--keep", required=True, metavar="DURATION",
              help="Keep period: 7d, 90d, 365d (at least 1d).")  # fmt: skip
@click.option("--then", "then", type=click.Choice(policies.ACTIONS), default="delete",
              show_default=True, help="What happens to rows older than that.")  # fmt: skip
@options.json_option
@options.settings_options("retention")
def retention_set_command(
    default: bool, tenant: str | None, keep: str, then: str, out: terminal.Output, **values: Any
) -> None:
    """Set the default or a tenant's policy (needs the schema owner's connection)."""
    s = app.load_settings(values)
    wanted = policies.Policy(_scope(default, tenant), policies.parse_keep(keep), then)
    stored = _policy_change(s, lambda conn: policies.put(conn, wanted))
    out.summary(stored.as_item(), policies.describe(stored))


@retention_group.command("unset")
@click.option("--default", "default", is_flag=True, help="Remove the default policy.")
@click.option("--tenant", help="Remove this tenant's policy (it follows the default again).")
@options.json_option
@options.settings_options("retention")
def retention_unset_command(
    default: bool, tenant: str | None, out: terminal.Output, **values: Any
) -> None:
    """Remove the default or a tenant's policy (needs the schema owner's connection); exit 1
    if there was none."""
    s = app.load_settings(values)
    scope = _scope(default, tenant)
    removed = _policy_change(s, lambda conn: policies.remove(conn, scope))
    if removed is None:
        raise exceptions.NotFoundError("no such policy (see `archiver retention show`)")
    out.summary(removed.as_item(), "removed: " + policies.describe(removed))


@retention_group.command("show")
@options.json_option
@options.settings_options("retention")
def retention_show_command(out: terminal.Output, **values: Any) -> None:
    """The policies: the default first, then one per tenant."""
    s = app.load_settings(values)
    found = app.run_db(s, policies.load)
    items = [p.as_item() for p in found.all()]
    out.items(items, policies.COLUMNS, None, "no retention policy: nothing is ever deleted")


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Only report what would go.")
@options.json_option
@options.settings_options("retention")
def retention_apply_command(dry_run: bool, out: terminal.Output, **values: Any) -> ExitCode:
    """Apply the policies now: what went (or, with --dry-run, would go), per tenant and month,
    rows and conversations. Runs under the retention job's lease; exit 1 if the run failed."""
    s = app.load_settings(values)
    if dry_run:
        previewing = periodic.export_gate(s, export_first=False)
        report = app.run_db(
            s, lambda conn: retention.preview(conn, partitions.method(s), previewing)
        )
        out.document(report | {"next": None}, lambda console: retention.render(report, console))
        return ExitCode.OK
    return _show_run(out, _run_job(s, "retention"), retention.render)


def _run_job(s: settings.Settings, name: str) -> jobs.Outcome:
    """Run a job in this process under its lease (skipped if a replica is running it)."""
    job = periodic.named(s, name)

    async def work() -> jobs.Outcome:
        pool = await store.connect(s.database_url, command_timeout=s.job_timeout, max_size=3)
        try:
            outcome = await jobs.Runner(pool, s).run(job, "manual")
        finally:
            await pool.close()
        if outcome is None:  # only a scheduled slot can be "already done"
            raise exceptions.ArchiverError(f"job {name} did not run")
        return outcome

    with exits.reaching_postgres(s.database_url):
        return asyncio.run(work())


def _show_run(
    out: terminal.Output,
    outcome: jobs.Outcome,
    show: Callable[[dict[str, Any], Console], None],
) -> ExitCode:
    """A run's report as the job's own view shows it; a skipped or failed run in one line."""
    if outcome.status == "ok":
        listed = {"next": None} if "items" in outcome.counts else {}  # the envelope of a list
        out.document(outcome.counts | listed, lambda console: show(outcome.counts, console))
        return ExitCode.OK
    out.summary(outcome.as_item(), jobs.describe(outcome))
    return ExitCode.OK if outcome.status == "skipped" else ExitCode.FAILED


@app.main.group("jobs", invoke_without_command=True)
@options.json_option
@options.settings_options("jobs")
@click.pass_context
def jobs_group(ctx: click.Context, /, out: terminal.Output, **values: Any) -> None:
    """The periodic jobs `archiver run` hosts: schedule (cron, UTC), last run, status and next
    run. `jobs run NAME` runs one now, in this process, under the job's lease."""
    if ctx.invoked_subcommand is not None:
        return
    s = app.load_settings(values)
    found = app.run_db(s, lambda conn: jobs.views(conn, periodic.registered(s)))
    out.items([view.as_item() for view in found], jobs.COLUMNS, None, "no jobs")


@jobs_group.command("run")
@click.argument("name")
@options.json_option
@options.settings_options("jobs")
@click.pass_context
def jobs_run_command(ctx: click.Context, /, name: str, **_: Any) -> ExitCode:
    """Run job NAME now in this process, under its lease (skipped, exit 0, if a replica is
    running it); exit 1 if the run fails."""
    values = options.inherit(ctx)
    out: terminal.Output = values.pop("out")
    values.pop("name", None)
    s = app.load_settings({k: v for k, v in values.items() if k in settings.Settings.model_fields})
    periodic.named(s, name)  # an unknown name is a usage error, before connecting
    show = {"retention": retention.render, "cold": _render_cold}.get(name, jobs.render_counts)
    return _show_run(out, _run_job(s, name), show)


def _render_cold(report: jobs.Counts, out: Any) -> None:
    from consumer.cold import gate  # pyarrow: loaded by the cold job's own commands only

    gate.render(report, out)


@app.main.command("partitions")
@options.json_option
@options.settings_options("partitions")
def partitions_command(out: terminal.Output, **values: Any) -> None:
    """The monthly partitions of conversation_history: bounds (UTC), size, estimated rows, and
    state (attached, or left by an interrupted drop)."""
    s = app.load_settings(values)
    found = app.run_db(s, partitions.listing)
    out.items([p.as_item() for p in found], partitions.COLUMNS, None, "no partitions")
