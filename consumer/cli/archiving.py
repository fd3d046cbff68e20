"""Commands that run the archiver: migrate, run (the always-on consumer), sweep."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from consumer import (
    exceptions,
    migrate,
    service,
    terminal,
)
from consumer.cli import app, exits, options
from consumer.cli.exits import ExitCode

T = TypeVar("T")


# --- running -------------------------------------------------------------------------------------


@app.main.command("migrate")
@options.json_option
@options.settings_options("migrate")
def migrate_command(out: terminal.Output, **values: Any) -> None:
    """Apply the pending numbered migrations of sql/ (serialized; re-running is a no-op)."""
    s = app.load_settings(values)
    applied = app.run_db(s, migrate.migrate)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    line = f"applied: {', '.join(names)}" if names else "schema is up to date"
    out.summary({"applied": names}, line)


@app.main.command("run")
@options.settings_options("run")
def run_command(**values: Any) -> None:
    """The always-on consumer: keyevent listener, deadline index, sweeper, health and metrics."""
    s = app.load_settings(values)
    service.tune_gc()
    try:
        asyncio.run(service.run(s))
    except OSError as exc:  # Redis and PostgreSQL errors are their own types: this is ours
        raise exceptions.ArchiverError(
            f"cannot start: {exc}: is --http-port / ARCHIVER_HTTP_PORT ({s.http_port}) free?"
        ) from exc


@app.main.command("sweep")
@options.json_option
@options.settings_options("sweep")
def sweep_command(out: terminal.Output, **values: Any) -> ExitCode:
    """One sweep, then exit (for cron): exit 1 if any checkpoint failed."""
    s = app.load_settings(values)
    service.tune_gc()
    with exits.reaching_redis(s.redis_url):
        report = asyncio.run(service.sweep_once(s))
    o = report.outcome
    found = {"found": report.found, "archived": o.archived, "messages": o.messages,
             "dead_letters": o.dead_letters, "errors": o.errors,
             "shadows_repaired": report.shadows_repaired,
             "duration_s": round(report.duration_s, 3), "skipped": report.skipped}  # fmt: skip
    out.summary(found, _sweep_line(found))
    return ExitCode.FAILED if o.errors else ExitCode.OK


def _sweep_line(r: dict[str, Any]) -> str:
    return (
        f"found {r['found']}, archived {r['archived']} ({r['messages']} messages),"
        f" dead-lettered {r['dead_letters']}, errors {r['errors']}, shadows repaired"
        f" {r['shadows_repaired']}, {r['duration_s']:.2f}s"
        + (" (skipped: another sweep runs)" if r["skipped"] else "")
    )
