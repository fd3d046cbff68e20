"""The `archiver` command group and what every command shares: settings, one database
connection, the exit codes (see consumer/cli/__init__.py for how a command is written)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from consumer import (
    __version__,
    logs,
    settings,
)
from consumer.cli import commands, exits

T = TypeVar("T")

EXIT_CODES = (
    "Exit codes: 0 done; 1 the work failed or found nothing (a failed checkpoint, no such"
    " conversation, a failing check); 2 usage or configuration (a flag, an ARCHIVER_* variable,"
    " a missing migration); 3 Redis or PostgreSQL unreachable; 130 interrupted."
)


def load_settings(values: dict[str, Any]) -> settings.Settings:
    """The settings from the command's flags and the environment; logging configured."""
    loaded = settings.load(**values)
    logs.configure(loaded.log_level, loaded.log_format, buffer_bytes=loaded.log_buffer)
    return loaded


def run_db(s: settings.Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work` on one connection to the archive; connection failures name --database-url."""

    async def connected() -> T:
        conn = await asyncpg.connect(s.database_url, timeout=s.db_timeout)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with exits.reaching_postgres(s.database_url):
        return asyncio.run(connected())


@click.group(
    "archiver",
    cls=commands.Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="archiver")
def main() -> None:
    """Archive agent conversation checkpoints from Redis into PostgreSQL before their TTL fires."""
