"""The API's reads: one tenant's conversations, a conversation's messages, a customer's
messages, a user's profile; pages keyset-paginated behind opaque cursors.

Every function runs inside the request's transaction (auth.Session), whose tenant row-level
security enforces; the tenant is named in the queries too, for the indexes. A subject that has
nothing in this tenant is NotFound, exactly as one of another tenant."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from consumer import cursors, exceptions, queries
from consumer.api import auth, params, problems

_PRINTABLE = re.compile(params.ID_PATTERN)
BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    limit: int = params.DEFAULT_LIMIT
    cursor: str | None = None


def not_found(what: str) -> problems.Problem:
    return problems.Problem(404, f"no such {what}")


# --- cursors -------------------------------------------------------------------------------------


def _decode(kind: str, cursor: str, size: int) -> list[Any]:
    try:
        return cursors.decode(kind, cursor, size)
    except exceptions.UsageError:
        raise _bad_cursor() from None


def _bad_cursor() -> problems.Problem:
    return problems.Problem(400, "cursor: not a cursor of this list (give the `next_cursor`"
                            " of the previous page as it was)")  # fmt: skip


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _bad_cursor()
    return moment


def _row_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= BIGINT:
        raise _bad_cursor()
    return value


def _text_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > params.MAX_ID or not _PRINTABLE.match(value):
        raise _bad_cursor()
    return value


def _after_message(kind: str, cursor: str | None) -> tuple[datetime | None, int | None]:
    if cursor is None:
        return None, None
    stamp, row_id = _decode(kind, cursor, 2)
    return _moment(stamp), _row_id(row_id)


def _next(kind: str, rows: list[asyncpg.Record], limit: int, *key: str) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return cursors.encode(kind, *(_plain(last[k]) for k in key))


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# --- the cold tier ---------------------------------------------------------------------------------


async def cold_months(
    s: auth.Session, rows: list[asyncpg.Record], window: Window = Window()
) -> list[str]:
    """The tenant's months (YYYY-MM) whose history has moved to the cold tier: older history
    of the subject asked about may be there (the warm archive no longer holds those months).
    Asked only if the page's rows say the tenant has verified exports in the window
    (maybe_cold), or the page is empty."""
    if rows and not rows[0]["maybe_cold"]:
        return []
    found = await s.conn.fetch(queries.get("api_cold_months"), s.tenant, window.since, window.until)
    return [row["month"] for row in found]


# --- conversations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    customer_id: str | None = None
    user_id: str | None = None
    window: Window = Window()


CONVERSATIONS = "api-conversations"


def _conversation(row: asyncpg.Record) -> dict[str, Any]:
    item = dict(row)
    del item["maybe_cold"]
    return item


async def conversations(s: auth.Session, wanted: ConversationFilter, page: Page) -> dict[str, Any]:
    """The tenant's conversations, newest (by start) first."""
    after: tuple[Any, Any] = (None, None)
    if page.cursor is not None:
        started, conversation = _decode(CONVERSATIONS, page.cursor, 2)
        after = (_moment(started), _text_id(conversation))
    rows = await s.conn.fetch(
        queries.get("api_conversations_page"), s.tenant, wanted.customer_id, wanted.user_id,
        wanted.window.since, wanted.window.until, *after, page.limit + 1,
    )  # fmt: skip
    return {
        "items": [_conversation(r) for r in rows[: page.limit]],
        "next_cursor": _next(CONVERSATIONS, rows, page.limit, "started_at", "conversation_id"),
        "cold_months": await cold_months(s, rows, wanted.window),
    }


# --- messages ------------------------------------------------------------------------------------


MESSAGES = "api-messages"
CUSTOMER_MESSAGES = "api-customer-messages"


def _message(row: asyncpg.Record) -> dict[str, Any]:
    item = dict(row)
    item["role"] = item.pop("message_role")
    item["content"] = item.pop("message_content")
    item["metadata"] = orjson.Fragment(item["metadata"])  # jsonb as PostgreSQL wrote it
    del item["maybe_cold"]
    return item


async def conversation_messages(
    s: auth.Session, conversation_id: str, page: Page
) -> dict[str, Any]:
    """A conversation's messages in order; 404 if the tenant has no such conversation."""
    after = _after_message(MESSAGES, page.cursor)
    rows = await s.conn.fetch(
        queries.get("api_conversation_messages_page"), s.tenant, conversation_id, *after,
        page.limit + 1,
    )  # fmt: skip
    if not rows and not await s.conn.fetchval(
        queries.get("api_conversation_exists"), s.tenant, conversation_id
    ):
        raise not_found("conversation")
    return {
        "items": [_message(r) for r in rows[: page.limit]],
        "next_cursor": _next(MESSAGES, rows, page.limit, "timestamp", "id"),
        "cold_months": await cold_months(s, rows),
    }


async def customer_messages(
    s: auth.Session, customer_id: str, window: Window, page: Page
) -> dict[str, Any]:
    """A customer's messages across conversations, in order; 404 if the tenant has no such
    customer."""
    after = _after_message(CUSTOMER_MESSAGES, page.cursor)
    rows = await s.conn.fetch(
        queries.get("api_customer_messages_page"), s.tenant, customer_id, window.since,
        window.until, *after, page.limit + 1,
    )  # fmt: skip
    if not rows and not await s.conn.fetchval(
        queries.get("api_customer_exists"), s.tenant, customer_id
    ):
        raise not_found("customer")
    return {
        "items": [_message(r) for r in rows[: page.limit]],
        "next_cursor": _next(CUSTOMER_MESSAGES, rows, page.limit, "timestamp", "id"),
        "cold_months": await cold_months(s, rows, window),
    }


# --- a user's profile ----------------------------------------------------------------------------


def _span(row: asyncpg.Record, which: str) -> dict[str, Any] | None:
    if row[f"{which}_id"] is None:
        return None
    return {"conversation_id": row[f"{which}_id"], "started_at": row[f"{which}_started_at"],
            "ended_at": row[f"{which}_ended_at"]}  # fmt: skip


async def profile(s: auth.Session, user_id: str) -> dict[str, Any]:
    """Conversation statistics of a user; 404 if the tenant has no such user."""
    row = await s.conn.fetchrow(queries.get("api_user_profile"), s.tenant, user_id)
    if row is None or not row["conversation_count"]:
        raise not_found("user")
    return {
        "user_id": user_id,
        "conversation_count": row["conversation_count"],
        "message_count": row["message_count"],
        "first_conversation": _span(row, "first"),
        "last_conversation": _span(row, "last"),
    }
