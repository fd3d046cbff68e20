"""Archive rows for the History API's tests, written as the superuser (as the archiver would
have stored them): conversations of several tenants, customers and users."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def conversation(
    conn: asyncpg.Connection,
    tenant: str,
    conversation_id: str,
    *,
    customer: str | None = None,
    user: str | None = None,
    start: datetime = BASE,
    messages: int = 3,
    step: timedelta = timedelta(minutes=1),
) -> list[datetime]:
    """A conversation of `messages` alternating user/assistant messages from `start`; their times."""
    stamps = [start + i * step for i in range(messages)]
    await add_messages(conn, tenant, conversation_id, stamps, customer=customer, user=user)
    return stamps


async def add_messages(
    conn: asyncpg.Connection,
    tenant: str,
    conversation_id: str,
    stamps: Sequence[datetime],
    *,
    customer: str | None = None,
    user: str | None = None,
) -> None:
    """Messages at `stamps` (and the conversation's row, its span widened to them)."""
    for stamp in {s.replace(day=1, hour=0, minute=0, second=0, microsecond=0) for s in stamps}:
        await conn.execute("SELECT archiver_ensure_partition($1)", stamp)
    rows = [
        (tenant, customer, user, conversation_id, stamp, ("user", "assistant")[i % 2],
         f"message {i} of {conversation_id}", orjson.dumps({"i": i}).decode(),
         f"{conversation_id}:{stamp.isoformat()}", f"test:{conversation_id}")
        for i, stamp in enumerate(stamps)
    ]  # fmt: skip
    await conn.executemany(
        "INSERT INTO conversation_history (tenant_id, customer_id, user_id, conversation_id,"
        ' "timestamp", message_role, message_content, metadata, message_key, source_key)'
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)",
        rows,
    )
    await conn.execute(
        "INSERT INTO conversations AS c (tenant_id, conversation_id, customer_id, user_id,"
        " started_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (tenant_id, conversation_id) DO UPDATE"
        " SET started_at = least(c.started_at, excluded.started_at),"
        " ended_at = greatest(c.ended_at, excluded.ended_at)",
        tenant, conversation_id, customer, user, min(stamps), max(stamps),
    )  # fmt: skip


async def cold_month(
    conn: asyncpg.Connection, tenant: str, month: datetime, *, verified: bool = True
) -> None:
    """A row of archived_partitions as the cold tier's export leaves it (no files: the API only
    reads the row)."""
    await conn.execute(
        "INSERT INTO archived_partitions (tenant_id, month, version, export_id, archive_path,"
        " manifest_path, format, files, row_count, compressed_size, sha256, content_digest,"
        " verified_at) VALUES ($1, $2, 1, $3, 'file:///cold', 'file:///cold/m.json', 'parquet',"
        " 1, 10, 100, 'x', 'y', CASE WHEN $4 THEN now() END)",
        tenant, month.date(), f"{tenant}-{month:%Y-%m}", verified,
    )  # fmt: skip
