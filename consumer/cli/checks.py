"""Commands that tell whether the archiver is well: status, check, health."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import click

from consumer import (
    status,
    terminal,
)
from consumer.cli import app, options
from consumer.cli.exits import ExitCode

T = TypeVar("T")


# --- health --------------------------------------------------------------------------------------


@app.main.command("status")
@options.json_option
@click.option("--limit", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="Archive runs to show.")  # fmt: skip
@options.settings_options("status")
def status_command(out: terminal.Output, limit: int, **values: Any) -> ExitCode:
    """The local health file (its age and `check`'s verdict), the consumers' heartbeats in
    Redis, and the database: schema, open dead letters, last archive runs.

    Exit 0 when every part could be read, else 3 (a server unreachable) or 2 (no schema).
    """
    s = app.load_settings(values)
    report = asyncio.run(status.gather(s, limit))
    out.document(report, lambda console: status.render(report, console))
    return status.exit_code(report)


@app.main.command("check")
@options.json_option
@options.settings_options("check")
def check_command(out: terminal.Output, **values: Any) -> ExitCode:
    """Exit 0 if this host's health file is fresh and not unhealthy, else 1 (container health
    checks; from elsewhere use `archiver health`)."""
    s = app.load_settings(values)
    part = status.health_file(s)
    out.summary(part, part["check"]["reason"])
    return ExitCode.OK if part["check"]["ok"] else ExitCode.FAILED


@app.main.command("health")
@options.json_option
@click.option("--min-consumers", default=1, show_default=True, type=click.IntRange(0, 1000),
              help="Healthy `archiver run` heartbeats required (0: cron sweeps alone).")  # fmt: skip
@options.settings_options("health")
def health_command(out: terminal.Output, min_consumers: int, **values: Any) -> ExitCode:
    """From anywhere: PostgreSQL reachable and migrated, Redis reachable, and enough consumers
    renewing their heartbeat and not unhealthy. Exit 0 if all pass, 1 if a check fails, 3 if a
    server is unreachable."""
    s = app.load_settings(values)
    result, code = asyncio.run(status.checks(s, min_consumers))
    out.document(result, lambda console: status.render_checks(result, console))
    return code
