"""The `archiver` command. Every option is a flag and an environment variable ARCHIVER_<NAME>."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import click
import orjson
import structlog
from pydantic.fields import FieldInfo
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from consumer import (
    __version__,
    deadletters,
    demo,
    exceptions,
    health,
    history,
    jobs,
    keys,
    logs,
    migrate,
    partitions,
    periodic,
    policies,
    retention,
    service,
    settings,
    status,
    store,
)

F = TypeVar("F", bound=Callable[..., Any])
log = structlog.get_logger("consumer.cli")


def _commands_of(info: FieldInfo) -> list[str]:
    extra = info.json_schema_extra
    return list(extra.get("commands", [])) if isinstance(extra, dict) else []  # type: ignore[arg-type]


def _option(name: str, info: FieldInfo) -> Callable[[F], F]:
    flag = "--" + name.replace("_", "-")
    env = f"ARCHIVER_{name.upper()}"
    default = info.default
    shown = settings.format_duration(default) if isinstance(default, float) else default
    help_text = f"{info.description} [default: {shown}]"
    if info.annotation is bool:
        decls = [f"{flag}/--no-{flag[2:]}"]
        return click.option(
            *decls, name, default=None, envvar=env, show_envvar=True, help=help_text
        )
    return click.option(flag, name, default=None, envvar=env, show_envvar=True, help=help_text)


def settings_options(command: str) -> Callable[[F], F]:
    """Add a flag for every setting the command uses."""

    def decorate(func: F) -> F:
        for name, info in reversed(settings.Settings.model_fields.items()):
            if command in _commands_of(info):
                func = _option(name, info)(func)
        return func

    return decorate


def _settings(values: dict[str, Any]) -> settings.Settings:
    try:
        loaded = settings.load(**values)
    except exceptions.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logs.configure(loaded.log_level, loaded.log_format)
    return loaded


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"archiver: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="archiver")
def main() -> None:
    """Archive agent conversation checkpoints from Redis into PostgreSQL before their TTL fires."""


@main.command("migrate")
@settings_options("migrate")
def migrate_command(**values: Any) -> None:
    """Apply the pending numbered migrations of sql/ (serialized; re-running is a no-op)."""
    s = _settings(values)

    async def apply() -> list[str]:
        conn = await asyncpg.connect(s.database_url, timeout=s.db_timeout)
        try:
            return [f"{m.version:04d}_{m.name}" for m in await migrate.migrate(conn)]
        finally:
            await conn.close()

    try:
        applied = asyncio.run(apply())
    except exceptions.MigrationError as exc:
        _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot reach PostgreSQL at ARCHIVER_DATABASE_URL: {exc}")
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@main.command("run")
@settings_options("run")
def run_command(**values: Any) -> None:
    """The always-on consumer: keyevent listener, deadline index, sweeper, health and metrics."""
    s = _settings(values)
    service.tune_gc()
    try:
        asyncio.run(service.run(s))
    except exceptions.PendingMigrationsError as exc:
        _fail(str(exc))
    except exceptions.ArchiverError as exc:
        _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot start: {type(exc).__name__}: {exc}", code=1)


@main.command("sweep")
@settings_options("sweep")
def sweep_command(**values: Any) -> None:
    """One sweep, then exit (for cron): non-zero if any checkpoint failed."""
    s = _settings(values)
    service.tune_gc()
    try:
        report = asyncio.run(service.sweep_once(s))
    except exceptions.ArchiverError as exc:
        _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"sweep failed: {type(exc).__name__}: {exc}", code=1)
    o = report.outcome
    click.echo(
        f"found {report.found}, archived {o.archived} ({o.messages} messages),"
        f" dead-lettered {o.dead_letters}, errors {o.errors}, shadows repaired"
        f" {report.shadows_repaired}, {report.duration_s:.2f}s"
        + (" (skipped: another sweep runs)" if report.skipped else "")
    )
    sys.exit(1 if o.errors else 0)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", default=10, show_default=True, help="Archive runs to show.")
@settings_options("status")
def status_command(as_json: bool, limit: int, **values: Any) -> None:
    """The health file and the last archive runs."""
    s = _settings(values)
    report = asyncio.run(status.gather(s, limit))
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        status.render(report)


@main.command("check")
@settings_options("check")
def check_command(**values: Any) -> None:
    """Exit 0 if the health file is fresh and not unhealthy, else 1 (container health checks)."""
    s = _settings(values)
    snapshot = health.read(s.health_file)
    ok, why = health.verdict(snapshot, status.max_age(snapshot))
    click.echo(why)
    sys.exit(0 if ok else 1)


async def _with_connection(s: settings.Settings, work: Callable[[asyncpg.Connection], Any]) -> Any:
    conn = await asyncpg.connect(s.database_url, timeout=s.db_timeout)
    try:
        return await work(conn)
    finally:
        await conn.close()


def _run_db(s: settings.Settings, work: Callable[[asyncpg.Connection], Any]) -> Any:
    try:
        return asyncio.run(_with_connection(s, work))
    except exceptions.ArchiverError as exc:
        _fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot read the archive: {type(exc).__name__}: {exc}", code=1)


def _print_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


@main.command("history")
@click.argument("conversation_id")
@click.option("--tenant", help="Only this tenant's conversation of that id.")
@click.option("--json", "as_json", is_flag=True, help="The whole records as JSON.")
@settings_options("history")
def history_command(conversation_id: str, tenant: str | None, as_json: bool, **values: Any) -> None:
    """A conversation's archived messages, in order."""
    s = _settings(values)
    rows = _run_db(s, lambda conn: history.messages(conn, conversation_id, tenant))
    if as_json:
        _print_json(rows)
    elif not rows:
        _fail(f"no archived messages for conversation {conversation_id!r}", code=1)
    else:
        history.render_messages(rows, Console())


@main.command("conversations")
@click.option("--tenant", help="Only this tenant.")
@click.option("--customer", help="Only this customer.")
@click.option("--user", help="Only this user.")
@click.option("--since", type=click.DateTime(), help="Only conversations active since then.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--after", "cursor", help="Continue after a previous page (its `more:` cursor).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("conversations")
def conversations_command(
    tenant: str | None,
    customer: str | None,
    user: str | None,
    since: datetime | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Archived conversations, newest first, with message counts and time span."""
    s = _settings(values)
    since_utc = since.replace(tzinfo=since.tzinfo or s.zone) if since else None
    filters = history.Filters(tenant, customer, user, since_utc)
    page = _run_db(s, lambda conn: history.conversations(conn, filters, limit, cursor))
    if as_json:
        _print_json({"conversations": page.rows, "next": page.next_cursor})
    else:
        history.render_conversations(page, Console())


@main.group("dead-letters", invoke_without_command=True)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved ones.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("dead-letters")
@click.pass_context
def dead_letters_group(
    ctx: click.Context, /, include_resolved: bool, limit: int, as_json: bool, **values: Any
) -> None:
    """Quarantined checkpoints and why; `replay` retries them after a decoder fix."""
    ctx.obj = values
    if ctx.invoked_subcommand is not None:
        return
    s = _settings(values)
    rows = _run_db(s, lambda conn: deadletters.listing(conn, include_resolved, limit))
    if as_json:
        _print_json(rows)
    else:
        deadletters.render(rows, Console())


@dead_letters_group.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.pass_obj
def replay_command(values: dict[str, Any], ids: tuple[int, ...]) -> None:
    """Decode open dead letters (all, or IDS) again; archive and resolve those that decode now."""
    s = _settings(values)
    layout = keys.layout_from(s.key_pattern, s.shadow_prefix)

    async def work() -> deadletters.Replay:
        pool = await store.connect(s.database_url, command_timeout=s.db_timeout, max_size=2)
        try:
            the_store = store.Store(pool)
            return await deadletters.replay(the_store, layout, service.codec_options(s), list(ids))
        finally:
            await pool.close()

    try:
        result = asyncio.run(work())
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot replay: {type(exc).__name__}: {exc}", code=1)
    click.echo(
        f"replayed: {result.archived} archived ({result.messages} messages),"
        f" {result.still_failing} still failing"
    )
    sys.exit(1 if result.still_failing else 0)


main.add_command(demo.command)


# --- retention, periodic jobs and partitions (consumer/retention.py, jobs.py, partitions.py) ---
# Thin commands: each asks a function of those modules for plain data and renders it, as a
# table or, with --json, as JSON (lists as {"items": [...], "next": null}; times in UTC ISO
# 8601). Stored strings (tenant ids, errors) reach the terminal as plain text, never markup.


def _lifecycle_time(value: datetime, timespec: str = "auto") -> str:
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _lifecycle_console() -> Console:
    """On a terminal, its width; piped, wide enough that rows stay on one line."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _lifecycle_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _lifecycle_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(type(value).__name__)


def _lifecycle_json(value: Any) -> None:
    options = orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME
    click.echo(orjson.dumps(value, option=options, default=_lifecycle_default))


def _lifecycle_cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, datetime):
        return Text(_lifecycle_time(value, "seconds"))
    return Text(str(value))


def _lifecycle_table(
    title: str | None, columns: list[tuple[str, str]], rows: list[dict[str, Any]]
) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_lifecycle_cell(row.get(key)) for _, key in columns))
    _lifecycle_console().print(table)


def _lifecycle_fail(message: str, code: int) -> None:
    click.echo(f"archiver: {message}", err=True)
    sys.exit(code)


def _lifecycle_line(text: str) -> None:
    _lifecycle_console().print(Text(text), soft_wrap=True)


def _one_scope(default: bool, tenant: str | None) -> str | None:
    """The tenant, or None for --default; exactly one of the two."""
    if default == (tenant is not None):
        raise click.UsageError("give exactly one of --default and --tenant T")
    if tenant is not None and not tenant:
        raise click.UsageError("--tenant: a tenant id cannot be empty")
    return tenant


def _policy_change(s: settings.Settings, work: Callable[[Any], Any]) -> Any:
    """Run a policy change; a role that may not (the archiver's own) gets a clear error."""

    async def owner_only(conn: asyncpg.Connection) -> Any:
        try:
            return await work(conn)
        except asyncpg.InsufficientPrivilegeError:
            raise exceptions.ConfigError(
                "changing a retention policy needs the schema owner's connection: run this"
                " command with ARCHIVER_DATABASE_URL of the migration owner (the archiver's"
                " own role may only read policies; see ops/OPERATIONS.md, Retention)"
            ) from None

    return _run_db(s, owner_only)


@main.group("retention")
def retention_group() -> None:
    """Retention policies per tenant (keep period; then delete or export) and applying them.

    A tenant without its own policy follows the default; with neither, nothing of it is
    ever deleted. `apply` runs under the same lease as the scheduled job."""


_POLICY_COLUMNS = [("scope", "scope"), ("tenant", "tenant"), ("keep", "keep"), ("then", "then"),
                   ("updated", "updated_at")]  # fmt: skip


@retention_group.command("set")
@click.option("--default", "default", is_flag=True, help="The default policy.")
@click.option("--tenant", help="This tenant's policy.")
@click.option("--keep", required=True, help="Keep period, e.g. 7d, 90d, 365d (at least 1d).")
@click.option("--then", "then", type=click.Choice(policies.ACTIONS), default="delete",
              show_default=True, help="What happens to older rows.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("retention")
def retention_set_command(
    default: bool, tenant: str | None, keep: str, then: str, as_json: bool, **values: Any
) -> None:
    """Set the default or a tenant's policy (needs the schema owner's connection)."""
    s = _settings(values)
    try:
        wanted = policies.Policy(_one_scope(default, tenant), policies.parse_keep(keep), then)
    except exceptions.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    stored = _policy_change(s, lambda conn: policies.put(conn, wanted))
    if as_json:
        _lifecycle_json(stored.as_item())
    else:
        _lifecycle_table(None, _POLICY_COLUMNS, [stored.as_item()])


@retention_group.command("unset")
@click.option("--default", "default", is_flag=True, help="The default policy.")
@click.option("--tenant", help="This tenant's policy (it then follows the default).")
@settings_options("retention")
def retention_unset_command(default: bool, tenant: str | None, **values: Any) -> None:
    """Remove the default or a tenant's policy (needs the schema owner's connection)."""
    s = _settings(values)
    scope = _one_scope(default, tenant)
    removed = _policy_change(s, lambda conn: policies.remove(conn, scope))
    if removed is None:
        _lifecycle_fail("no such policy", code=1)
    _lifecycle_line(f"removed the {'default' if scope is None else 'tenant ' + scope} policy")


@retention_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("retention")
def retention_show_command(as_json: bool, **values: Any) -> None:
    """The policies: the default first, then one per tenant."""
    s = _settings(values)
    found = _run_db(s, policies.load)
    items = [p.as_item() for p in found.all()]
    if as_json:
        _lifecycle_json({"items": items, "next": None})
    elif not items:
        _lifecycle_line("no retention policy: nothing is ever deleted")
    else:
        _lifecycle_table("retention policies", _POLICY_COLUMNS, items)


_RETENTION_COLUMNS = [("tenant", "tenant"), ("month", "month"), ("rows", "rows"),
                      ("conversations", "conversations"), ("action", "action"),
                      ("reason", "reason")]  # fmt: skip


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Only report what would go.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("retention")
def retention_apply_command(dry_run: bool, as_json: bool, **values: Any) -> None:
    """Apply the policies now (what went, or would go: per tenant and month, rows and
    conversations). Exit 1 if the run failed."""
    s = _settings(values)
    if dry_run:
        report = _run_db(s, lambda conn: retention.preview(conn, partitions.method(s)))
        _show_retention(report, as_json)
        return
    outcome = _run_job(s, "retention")
    _show_outcome(outcome, as_json, _show_retention)


def _show_retention(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _lifecycle_json(report | {"next": None})
        return
    verb = "would go" if report["dry_run"] else "went"
    _lifecycle_table(f"retention: what {verb}", _RETENTION_COLUMNS, report["items"])
    for tenant, cutoff in report["cutoffs"].items():
        _lifecycle_line(f"{tenant}: rows before {_lifecycle_time(cutoff)} expire")
    if report["unmanaged_tenants"]:
        _lifecycle_line("no policy (kept): " + ", ".join(report["unmanaged_tenants"]))
    _lifecycle_line(
        f"partitions dropped: {', '.join(report['partitions_dropped']) or 'none'};"
        f" rows {report['rows_dropped']} by partition, {report['rows_deleted']} in batches;"
        f" conversations updated {report['conversations_updated']},"
        f" removed {report['conversations_removed']}"
    )


def _run_job(s: settings.Settings, name: str) -> jobs.Outcome:
    """Run a job in this process under its lease (skipped if a replica is running it)."""
    job = periodic.named(s, name)

    async def work() -> jobs.Outcome:
        pool = await store.connect(s.database_url, command_timeout=s.job_timeout, max_size=3)
        try:
            outcome = await jobs.Runner(pool, s).run(job, "manual")
        finally:
            await pool.close()
        assert outcome is not None  # a manual run is never "already done"
        return outcome

    try:
        return asyncio.run(work())
    except (OSError, asyncpg.PostgresError) as exc:
        _lifecycle_fail(f"cannot run job {name}: {type(exc).__name__}: {exc}", code=1)
    raise AssertionError("unreachable")


def _show_outcome(
    outcome: jobs.Outcome, as_json: bool, show: Callable[[dict[str, Any], bool], None]
) -> None:
    if outcome.status == "skipped":
        assert outcome.until is not None
        message = (f"skipped: job {outcome.job} is running on {outcome.holder}"
                   f" (lease until {_lifecycle_time(outcome.until)})")  # fmt: skip
        _lifecycle_json(outcome.as_item()) if as_json else _lifecycle_line(message)
        return
    if outcome.status == "ok":
        show(outcome.counts, as_json)
    elif as_json:
        _lifecycle_json(outcome.as_item())
    if outcome.status != "ok":
        _lifecycle_fail(
            f"job {outcome.job} {outcome.status} (run {outcome.run_id}): {outcome.error}", 1
        )


@main.group("jobs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("jobs")
@click.pass_context
def jobs_group(ctx: click.Context, /, as_json: bool, **values: Any) -> None:
    """The periodic jobs `archiver run` hosts: schedule (cron, UTC), last run, status and
    next run. `jobs run NAME` runs one now, in this process, under the job's lease."""
    ctx.obj = values
    if ctx.invoked_subcommand is not None:
        return
    s = _settings(values)
    found = _run_db(s, lambda conn: jobs.views(conn, periodic.registered(s)))
    items = [view.as_item() for view in found]
    if as_json:
        _lifecycle_json({"items": items, "next": None})
        return
    rows = [_job_row(item) for item in items]
    columns = [("job", "job"), ("schedule", "schedule"), ("last run", "last"),
               ("status", "status"), ("next run", "next"), ("error", "error")]  # fmt: skip
    _lifecycle_table("periodic jobs", columns, rows)


def _job_row(item: dict[str, Any]) -> dict[str, Any]:
    last = item["last_run"] or {}
    status = f"running on {item['held_by']}" if item["running"] else item["status"] or "never run"
    upcoming = item["next_run_at"]
    shown = "due now" if item["due_now"] else upcoming and _lifecycle_time(upcoming, "seconds")
    return item | {"last": last.get("started_at"), "status": status, "next": shown,
                   "error": last.get("error")}  # fmt: skip


@jobs_group.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def jobs_run_command(values: dict[str, Any], name: str, as_json: bool) -> None:
    """Run job NAME now in this process (skipped if a replica is running it); exit 1 if it
    fails."""
    s = _settings(values)
    try:
        periodic.named(s, name)
    except exceptions.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    outcome = _run_job(s, name)
    _show_outcome(outcome, as_json, _show_counts)


def _show_counts(counts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _lifecycle_json(counts)
    elif "items" in counts:
        _show_retention(counts, as_json)
    else:
        for key, value in counts.items():
            _lifecycle_line(f"{key}: {value}")


@main.command("partitions")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@settings_options("partitions")
def partitions_command(as_json: bool, **values: Any) -> None:
    """The monthly partitions of conversation_history: bounds (UTC), size, estimated rows,
    and state (attached, or left by an interrupted drop)."""
    s = _settings(values)
    found = _run_db(s, partitions.listing)
    items = [p.as_item() for p in found]
    if as_json:
        _lifecycle_json({"items": items, "next": None})
        return
    columns = [("name", "name"), ("from (UTC)", "from"), ("to", "to"), ("size", "size"),
               ("rows (est.)", "estimated_rows"), ("state", "state")]  # fmt: skip
    rows = [item | {"size": _size(item["bytes"]), "from": _day(item["lower"]),
                    "to": _day(item["upper"])} for item in items]  # fmt: skip
    _lifecycle_table("partitions of conversation_history", columns, rows)


def _day(moment: datetime) -> str:
    return _lifecycle_time(moment).removesuffix("T00:00:00Z")


def _size(octets: int) -> str:
    value = float(octets)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
