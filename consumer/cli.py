"""The `archiver` command. Every option is a flag and an environment variable ARCHIVER_<NAME>."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import click
import orjson
import structlog
from pydantic.fields import FieldInfo
from rich.console import Console

from consumer import (
    __version__,
    deadletters,
    demo,
    exceptions,
    health,
    history,
    keys,
    logs,
    migrate,
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
    logs.configure(loaded.log_level, loaded.log_format, buffer_bytes=loaded.log_buffer)
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
