"""Commands that read the archive: history, conversations, dead-letters (and replay)."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import click

from consumer import (
    deadletters,
    history,
    service,
    settings,
    store,
    terminal,
    times,
)
from consumer.cli import app, exits, options
from consumer.cli.exits import ExitCode

T = TypeVar("T")


# --- reading the archive -------------------------------------------------------------------------


@app.main.command("history")
@click.argument("conversation_id")
@click.option("--tenant", help="Only this tenant's conversation of that id.")
@options.time_option("--since", "Only messages from then on.")
@options.time_option("--until", "Only messages before then.")
@options.tz_option
@options.page_options(default=100)
@options.json_option
@options.settings_options("history")
def history_command(
    conversation_id: str,
    tenant: str | None,
    since: times.Instant | None,
    until: times.Instant | None,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """A conversation's archived messages, in order, each shown whole. Exit 1 if it has none."""
    s = app.load_settings(values)
    window = history.Window(since, until)
    page = app.run_db(
        s, lambda conn: history.messages(conn, conversation_id, tenant, window, limit, cursor)
    )
    out.items(page.rows, [], page.next_cursor, "no messages", draw=history.render_messages)


@app.main.command("conversations")
@click.option("--tenant", help="Only this tenant.")
@click.option("--customer", help="Only this customer.")
@click.option("--user", help="Only this user.")
@options.time_option("--since", "Only conversations active since then.")
@options.time_option("--until", "Only conversations started before then.")
@options.tz_option
@options.page_options(default=20)
@options.json_option
@options.settings_options("conversations")
def conversations_command(
    tenant: str | None,
    customer: str | None,
    user: str | None,
    since: times.Instant | None,
    until: times.Instant | None,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """Archived conversations, newest first, with message counts and time span."""
    s = app.load_settings(values)
    filters = history.Filters(tenant, customer, user, history.Window(since, until))
    page = app.run_db(s, lambda conn: history.conversations(conn, filters, limit, cursor))
    out.items(page.rows, history.CONVERSATION_COLUMNS, page.next_cursor, "no conversations match")


# --- dead letters --------------------------------------------------------------------------------


@app.main.group("dead-letters", invoke_without_command=True)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved ones.")
@options.page_options(default=100, maximum=100_000)
@options.json_option
@options.settings_options("dead-letters")
@click.pass_context
def dead_letters_group(
    ctx: click.Context,
    /,
    include_resolved: bool,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """Quarantined checkpoints and why; `replay` retries them after a decoder fix."""
    if ctx.invoked_subcommand is not None:
        return
    s = app.load_settings(values)
    page = app.run_db(s, lambda conn: deadletters.listing(conn, include_resolved, limit, cursor))
    out.items(page.rows, deadletters.COLUMNS, page.next_cursor, "no open dead letters")


@dead_letters_group.command("replay")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@options.json_option
@options.settings_options("dead-letters")
@click.pass_context
def replay_command(ctx: click.Context, /, ids: tuple[int, ...], **_: Any) -> ExitCode:
    """Decode open dead letters (all, or the IDs) again; archive and resolve those that decode
    now. Exit 1 if any still fails or an ID is not an open dead letter."""
    values = options.inherit(ctx)
    out: terminal.Output = values.pop("out")
    s = app.load_settings({k: v for k, v in values.items() if k in settings.Settings.model_fields})
    with exits.reaching_postgres(s.database_url):
        result = asyncio.run(_replay(s, list(ids)))
    out.summary(
        {"archived": result.archived, "messages": result.messages,
         "still_failing": result.still_failing, "not_found": result.not_found},
        _replay_line(result),
    )  # fmt: skip
    return ExitCode.FAILED if result.still_failing or result.not_found else ExitCode.OK


async def _replay(s: settings.Settings, ids: list[int]) -> deadletters.Replay:
    source = service.source_of(s)
    pool = await store.connect(s.database_url, command_timeout=s.db_timeout, max_size=2)
    try:
        the_store = store.Store(pool, s.erasure_secret)
        return await deadletters.replay(the_store, source, ids)
    finally:
        await pool.close()


def _replay_line(result: deadletters.Replay) -> str:
    line = (
        f"replayed: {result.archived} archived ({result.messages} messages),"
        f" {result.still_failing} still failing"
    )
    if result.not_found:
        missing = ", ".join(str(i) for i in result.not_found)
        line += f"; not open dead letters: {missing} (see `archiver dead-letters --all`)"
    return line
