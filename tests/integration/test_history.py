"""Reading the archive back, and replaying dead letters."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import pytest
import redis.asyncio as aioredis

from consumer import checkpoints, deadletters, exceptions, history, service, times
from tests.conftest import sample
from tests.integration.test_archive import NOW_DUE, P, payload


async def archive(
    parts: service.Parts, redis: aioredis.Redis, conversation: str, raw: bytes
) -> None:
    key = P.key(conversation, time.time())
    await P.write(redis, key, raw)
    await parts.archiver.archive([key], NOW_DUE)


async def test_history_returns_messages_in_order_with_the_summary(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await archive(parts, redis, "wa-msg-abc123", sample("basic.json"))
    await archive(parts, redis, "wa-msg-abc123", sample("summarized.json"))
    rows = (await history.messages(db, "wa-msg-abc123", None)).rows
    assert len(rows) == 7
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert sum(1 for r in rows if r["metadata"].get("summary")) == 1
    with pytest.raises(exceptions.NotFoundError, match="another-tenant"):
        await history.messages(db, "wa-msg-abc123", "another-tenant")


async def test_history_pages_through_a_conversation_in_order(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await archive(parts, redis, "long", payload("long", messages=7))
    seen, cursor = [], None
    while True:
        page = await history.messages(db, "long", limit=3, cursor=cursor)
        seen += page.rows
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 7
    assert [(r["timestamp"], r["id"]) for r in seen] == sorted(
        (r["timestamp"], r["id"]) for r in seen
    )
    assert len({r["id"] for r in seen}) == 7


async def test_history_and_conversations_take_times_relative_to_the_database_clock(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await archive(parts, redis, "recent", payload("recent"))
    newest = max(r["timestamp"] for r in (await history.messages(db, "recent")).rows)
    age = (await db.fetchval("SELECT now()") - newest).total_seconds()
    included = history.Window(since=times.Ago(age + 60))
    assert len((await history.messages(db, "recent", window=included)).rows) == 4
    after_all = history.Window(since=times.Ago(age - 10))
    assert (await history.messages(db, "recent", window=after_all)).rows == []
    ever = history.Window(since=datetime(2000, 1, 1, tzinfo=UTC), until=times.Ago(0))
    assert len((await history.messages(db, "recent", window=ever)).rows) == 4
    found = await history.conversations(db, history.Filters(window=ever), 10, None)
    assert [r["conversation_id"] for r in found.rows] == ["recent"]
    nothing = history.Filters(window=history.Window(until=datetime(2000, 1, 1, tzinfo=UTC)))
    assert (await history.conversations(db, nothing, 10, None)).rows == []


async def test_a_cursor_of_another_list_is_refused(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    for i in range(3):
        await archive(parts, redis, f"c-{i}", payload(f"c-{i}"))
    page = await history.conversations(db, history.Filters(), 1, None)
    assert page.next_cursor is not None
    with pytest.raises(exceptions.UsageError, match="not a cursor of `archiver history`"):
        await history.messages(db, "c-1", cursor=page.next_cursor)
    with pytest.raises(exceptions.UsageError, match="not a cursor"):
        await history.conversations(db, history.Filters(), 1, "garbage!")


async def test_conversations_are_paginated_newest_first(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    for i in range(5):
        await archive(parts, redis, f"conv-{i}", payload(f"conv-{i}", messages=i + 1))
    seen, cursor = [], None
    while True:
        page = await history.conversations(db, history.Filters(tenant="t1"), 2, cursor)
        seen += [r["conversation_id"] for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"conv-{i}" for i in range(5)]
    assert len(seen) == len(set(seen))
    assert (await history.conversations(db, history.Filters(tenant="other"), 10, None)).rows == []


async def test_replay_archives_what_decodes_now_and_keeps_the_rest(
    parts: service.Parts, db: asyncpg.Connection
) -> None:
    good = P.key("fixed", time.time())
    bad = P.key("still-bad", time.time())
    for key, raw in ((good, payload("fixed")), (bad, sample("malformed_shape.txt"))):
        await db.execute(
            "INSERT INTO archive_dead_letters (source_key, digest, raw, error) VALUES ($1, $2, $3, 'old')",
            key, checkpoints.digest(raw), raw,
        )  # fmt: skip
    result = await deadletters.replay(parts.store, parts.archiver.redis.source, [])
    assert (result.archived, result.messages, result.still_failing) == (1, 4, 1)
    letters = {r["source_key"]: r for r in (await deadletters.listing(db, True, 10)).rows}
    assert letters[good]["resolved_at"] is not None
    assert letters[bad]["resolved_at"] is None
    assert letters[bad]["attempts"] == 2
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 4


async def test_replay_reports_ids_that_are_not_open_dead_letters(parts: service.Parts) -> None:
    result = await deadletters.replay(parts.store, parts.archiver.redis.source, [999, 998])
    assert (result.archived, result.still_failing, result.not_found) == (0, 0, [998, 999])
