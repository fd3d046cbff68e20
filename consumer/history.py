"""Reading the archive back: a conversation's messages and conversations, page by page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from rich.console import Console
from rich.text import Text

from consumer import cursors, exceptions, queries, terminal, times


@dataclass(frozen=True, slots=True)
class Window:
    """Times as given on the command line, resolved against the database's clock."""

    since: times.Instant | None = None
    until: times.Instant | None = None

    async def resolve(self, conn: asyncpg.Connection) -> tuple[datetime | None, datetime | None]:
        if self.since is None and self.until is None:
            return None, None
        now = await conn.fetchval(queries.get("database_now"))
        return (
            None if self.since is None else times.resolve(self.since, now),
            None if self.until is None else times.resolve(self.until, now),
        )


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: str | None = None
    customer: str | None = None
    user: str | None = None
    window: Window = Window()


# --- a conversation's messages -------------------------------------------------------------------


async def messages(
    conn: asyncpg.Connection,
    conversation_id: str,
    tenant: str | None = None,
    window: Window = Window(),
    limit: int = 100,
    cursor: str | None = None,
) -> cursors.Page:
    """Messages in order; NotFoundError if the conversation has none at all (first page)."""
    since, until = await window.resolve(conn)
    after = _after_message(cursor)
    rows = await conn.fetch(
        queries.get("history_page"), conversation_id, tenant, since, until, *after, limit + 1
    )
    page = [dict(r) | {"metadata": orjson.loads(r["metadata"])} for r in rows[:limit]]
    if not page and cursor is None and since is None and until is None:
        raise _no_conversation(conversation_id, tenant)
    more = len(rows) > limit
    return cursors.Page(page, _message_cursor(page[-1]) if more else None)


def _no_conversation(conversation_id: str, tenant: str | None) -> exceptions.NotFoundError:
    of_tenant = f" of tenant {tenant!r}" if tenant else ""
    return exceptions.NotFoundError(
        f"no archived messages for conversation {conversation_id!r}{of_tenant}:"
        " find its id with `archiver conversations --customer ID` (or --user, --tenant)"
    )


def _message_cursor(row: dict[str, Any]) -> str:
    return cursors.encode("history", times.iso(row["timestamp"]), row["id"])


def _after_message(cursor: str | None) -> tuple[datetime | None, int | None]:
    if cursor is None:
        return None, None
    stamp, row_id = cursors.decode("history", cursor, 2)
    try:
        return datetime.fromisoformat(stamp), int(row_id)
    except (TypeError, ValueError):
        raise exceptions.UsageError("--after: a damaged cursor of `archiver history`") from None


def render_messages(out: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """The conversation's ids (again whenever they change), then each message: a header line
    (time, role) and its content as it was written, every line and character, as text."""
    context: tuple[Any, ...] | None = None
    for row in rows:
        now = (row["tenant_id"], row["conversation_id"], row["customer_id"], row["user_id"])
        if now != context:
            _context(out, row, first=context is None)
            context = now
        terminal.print_line(out, _message_header(row))
        _content(out, row["message_content"])


def _context(out: Console, row: Mapping[str, Any], first: bool) -> None:
    if not first:
        terminal.print_line(out, "")
    pairs = [("conversation", row["conversation_id"]), ("tenant", row["tenant_id"]),
             ("customer", row["customer_id"]), ("user", row["user_id"])]  # fmt: skip
    terminal.fields(out, [(label, terminal.cell(value)) for label, value in pairs])
    terminal.print_line(out, "")


def _message_header(row: Mapping[str, Any]) -> Text:
    header = Text.assemble(
        (times.text(row["timestamp"]), "cyan"), "  ", (row["message_role"], "bold")
    )
    if row["metadata"].get("summary"):
        header.append("  (summary)", style="magenta")
    return header


INDENT = 4


def _content(out: Console, content: str) -> None:
    """Every line of the content, indented; on a terminal wrapped between words to its width."""
    text = terminal.visible(content, prose=True)
    width = terminal.width_of(out)
    if width is None:
        lines = list(text.split("\n", allow_blank=True))
    else:
        lines = list(text.wrap(out, max(20, width - INDENT), overflow="fold"))
    for line in lines:
        line.rstrip()
        terminal.print_line(out, Text(" " * INDENT) + line)


# --- conversations -------------------------------------------------------------------------------


CONVERSATION_COLUMNS = [
    terminal.column("conversation", "conversation_id", "id"),
    terminal.column("tenant", "tenant_id", "id"),
    terminal.column("customer", "customer_id", "id"),
    terminal.column("user", "user_id", "id"),
    terminal.column("messages", "message_count", "number"),
    terminal.column("started", "started_at", "time", drop=1),
    terminal.column("ended", "ended_at", "time"),
]


async def conversations(
    conn: asyncpg.Connection, filters: Filters, limit: int, cursor: str | None
) -> cursors.Page:
    """Newest first; `cursor` continues after the last row of the previous page."""
    since, until = await filters.window.resolve(conn)
    after = _after_conversation(cursor)
    rows = await conn.fetch(
        queries.get("conversations_page"),
        filters.tenant, filters.customer, filters.user, since, until, *after, limit + 1,
    )  # fmt: skip
    page = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    return cursors.Page(page, _conversation_cursor(page[-1]) if more and page else None)


def _conversation_cursor(row: dict[str, Any]) -> str:
    return cursors.encode(
        "conversations", times.iso(row["ended_at"]), row["tenant_id"], row["conversation_id"]
    )


def _after_conversation(cursor: str | None) -> tuple[Any, ...]:
    if cursor is None:
        return None, None, None
    ended, tenant, conversation = cursors.decode("conversations", cursor, 3)
    try:
        return datetime.fromisoformat(ended), str(tenant), str(conversation)
    except (TypeError, ValueError):
        raise exceptions.UsageError(
            "--after: a damaged cursor of `archiver conversations`"
        ) from None
