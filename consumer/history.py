"""Reading the archive back: a conversation's messages, and conversations page by page."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from rich.console import Console
from rich.table import Table

from consumer import exceptions, queries


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: str | None = None
    customer: str | None = None
    user: str | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


async def messages(
    conn: asyncpg.Connection, conversation_id: str, tenant: str | None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(queries.get("history_messages"), conversation_id, tenant)
    return [dict(r) | {"metadata": orjson.loads(r["metadata"])} for r in rows]


async def conversations(
    conn: asyncpg.Connection, filters: Filters, limit: int, cursor: str | None
) -> Page:
    """Newest first; `cursor` continues after the last row of the previous page."""
    after: tuple[Any, ...] = decode_cursor(cursor) if cursor else (None, None, None)
    rows = await conn.fetch(
        queries.get("conversations_page"),
        filters.tenant, filters.customer, filters.user, filters.since, *after, limit + 1,
    )  # fmt: skip
    page = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(page, encode_cursor(page[-1]) if more and page else None)


def encode_cursor(row: dict[str, Any]) -> str:
    key = [row["ended_at"].isoformat(), row["tenant_id"], row["conversation_id"]]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    try:
        ended, tenant, conversation = orjson.loads(base64.urlsafe_b64decode(cursor))
        return datetime.fromisoformat(ended), str(tenant), str(conversation)
    except (ValueError, TypeError) as exc:
        raise exceptions.ArchiverError(
            f"not a cursor from `archiver conversations`: {cursor!r}"
        ) from exc


def render_messages(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(show_lines=False, expand=True)
    table.add_column("time", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("content", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in rows:
        content = r["message_content"].replace("\n", " ")
        if r["metadata"].get("summary"):
            content = f"[summary] {content}"
        table.add_row(r["timestamp"].isoformat(timespec="seconds"), r["message_role"], content)
    console.print(table)


def render_conversations(page: Page, console: Console) -> None:
    table = Table()
    for column in ("tenant", "conversation", "customer", "user", "messages", "started", "ended"):
        table.add_column(column)
    for r in page.rows:
        table.add_row(
            r["tenant_id"], r["conversation_id"], r["customer_id"] or "", r["user_id"] or "",
            str(r["message_count"]), _time(r["started_at"]), _time(r["ended_at"]),
        )  # fmt: skip
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --after {page.next_cursor}")


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
