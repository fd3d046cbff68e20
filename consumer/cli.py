"""The `archiver` command. Every option is a flag and an environment variable ARCHIVER_<NAME>."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import click
import orjson
import structlog
from pydantic.fields import FieldInfo

from consumer import __version__, exceptions, health, logs, migrate, service, settings, status

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
