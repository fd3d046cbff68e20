"""The shared archive routine against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
import redis.asyncio as aioredis

from consumer import checkpoints, model, producer, queries, service
from tests.conftest import sample
from tests.waiting import eventually

P = producer.Producer(ttl=30, archive_after=15)
NOW_DUE = 10**9  # a due window that admits every checkpoint


async def write(
    redis: aioredis.Redis, conversation: str, name: str, at: float | None = None
) -> str:
    key = P.key(conversation, at if at is not None else time.time())
    await P.write(redis, key, sample(name))
    return key


def payload(conversation: str, messages: int = 4) -> bytes:
    return orjson.dumps(
        {
            "conversation_id": conversation,
            "tenant_id": "t1",
            "messages": [
                {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}",
                 "timestamp": f"2026-11-21T10:00:{i:02d}Z"}
                for i in range(messages)
            ],
        }
    )  # fmt: skip


async def write_conversation(redis: aioredis.Redis, conversation: str) -> str:
    key = P.key(conversation, time.time())
    await P.write(redis, key, payload(conversation))
    return key


async def rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT conversation_id, message_role, message_content, message_key, metadata,"
        ' customer_id, tenant_id, "timestamp" FROM conversation_history ORDER BY conversation_id, timestamp, id'
    )


async def test_archives_messages_and_deletes_checkpoint_and_shadow(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = await write(redis, "wa-msg-abc123", "basic.json")
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert (outcome.archived, outcome.messages, outcome.errors) == (1, 4, 0)
    archived = await rows(db)
    assert [r["message_role"] for r in archived] == ["user", "assistant", "user", "assistant"]
    assert {r["customer_id"] for r in archived} == {"6f1c2b1e-8a4d-4f5e-9c1a-2b3c4d5e6f70"}
    assert {r["tenant_id"] for r in archived} == {"salon-madrid"}
    assert await redis.exists(key, parts.archiver.redis.layout.shadow(key)) == 0
    assert await redis.zscore(parts.archiver.redis.layout.deadlines, key) is None
    conv = await db.fetchrow("SELECT * FROM conversations WHERE conversation_id = 'wa-msg-abc123'")
    assert conv is not None and conv["customer_id"] == "6f1c2b1e-8a4d-4f5e-9c1a-2b3c4d5e6f70"
    times = [r["timestamp"] for r in archived]
    assert (conv["started_at"], conv["ended_at"]) == (min(times), max(times))


async def test_replays_and_overlapping_checkpoints_never_duplicate(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    first = await write(redis, "wa-msg-abc123", "basic.json", at=time.time() - 60)
    await parts.archiver.archive([first], NOW_DUE)
    await P.write(redis, first, sample("basic.json"))  # the same checkpoint again (a replay)
    later = await write(redis, "wa-msg-abc123", "summarized.json")
    outcome = await parts.archiver.archive([first, later], NOW_DUE)
    assert outcome.archived == 2
    archived = await rows(db)
    keys = [r["message_key"] for r in archived]
    assert len(keys) == len(set(keys)) == 4 + 2 + 1  # 4 first, 2 new, 1 summary
    summary = [r for r in archived if r["message_key"].startswith("summary:")]
    assert len(summary) == 1 and summary[0]["message_role"] == "system"
    page = await db.fetch(queries.get("conversations_page"), *[None] * 8, 10)
    assert [r["message_count"] for r in page] == [7]


async def test_two_archivers_racing_on_the_same_keys_archive_each_once(
    redis: aioredis.Redis, db: asyncpg.Connection, parts: service.Parts
) -> None:
    keys = [await write_conversation(redis, f"conv-{i}") for i in range(40)]
    async with service.connected(parts.settings) as other:
        a, b = await asyncio.gather(
            parts.archiver.archive(keys, NOW_DUE), other.archiver.archive(keys, NOW_DUE)
        )
    assert a.archived + b.archived == 40
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 40 * 4
    assert (
        await db.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT conversation_id, message_key FROM conversation_history) d"
        )
        == 40 * 4
    )


async def test_unreadable_payload_is_dead_lettered_with_raw_bytes(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    bad = P.key("broken-1", time.time())
    await P.write(redis, bad, sample("malformed_truncated.txt"))
    good = await write(redis, "agent-thread-41aa", "langchain_typed.json")
    outcome = await parts.archiver.archive([bad, good], NOW_DUE)
    assert (outcome.archived, outcome.dead_letters) == (1, 1)
    letter = await db.fetchrow("SELECT source_key, raw, error FROM archive_dead_letters")
    assert letter is not None
    assert letter["source_key"] == bad and letter["raw"] == sample("malformed_truncated.txt")
    assert "JSON" in letter["error"]
    assert await redis.exists(bad, good) == 0


async def test_pickle_is_dead_lettered_by_default(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = P.key("pickled", time.time())
    await P.write(redis, key, b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.dead_letters == 1
    assert "pickle" in await db.fetchval("SELECT error FROM archive_dead_letters")


async def test_nul_in_content_is_stored_losslessly(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = P.key("nul", time.time())
    value = (
        b'{"messages":[{"role":"user","content":"a\\u0000b","timestamp":"2026-11-21T10:00:00Z"}]}'
    )
    await P.write(redis, key, value)
    assert (await parts.archiver.archive([key], NOW_DUE)).archived == 1
    row = (await rows(db))[0]
    assert row["metadata"] is not None and "base64" in row["metadata"]


async def test_rewritten_while_archiving_is_kept_and_rearmed(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = await write(redis, "wa-msg-abc123", "basic.json")
    real_write = parts.store.write

    async def rewrite_during_commit(
        batch: Sequence[model.Checkpoint],
        dead: Sequence[model.DeadLetter],
        resolved: Sequence[int] = (),
    ) -> dict[str, int]:
        await redis.set(key, sample("summarized.json"), ex=30)  # the agent writes meanwhile
        return await real_write(batch, dead, resolved)

    parts.store.write = rewrite_during_commit  # type: ignore[method-assign]
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert (outcome.archived, outcome.changed) == (1, 1)
    assert await redis.get(key) == sample("summarized.json")
    assert await redis.pttl(parts.archiver.redis.layout.shadow(key)) > 0
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 4


async def test_refreshed_ttl_rearms_instead_of_archiving(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = await write(redis, "conv", "basic.json")
    await redis.expire(key, 30)  # far from due: more than the buffer left
    due_ms = 15_000 + 1000
    outcome = await parts.archiver.archive([key], due_ms)
    assert (outcome.archived, outcome.rearmed) == (0, 1)
    assert await redis.exists(key) == 1
    shadow_ms = await redis.pttl(parts.archiver.redis.layout.shadow(key))
    assert 10_000 < shadow_ms <= 15_000
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 0


async def test_late_identified_customer_is_backfilled(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    early = P.key("late", time.time() - 60)
    await P.write(
        redis,
        early,
        b'{"messages":[{"role":"user","content":"hi","timestamp":"2026-11-21T10:00:00Z"}]}',
    )
    await parts.archiver.archive([early], NOW_DUE)
    later = P.key("late", time.time())
    await P.write(
        redis, later,
        b'{"customer_id":"c-9","messages":[{"role":"user","content":"hi","timestamp":"2026-11-21T10:00:00Z"},'
        b'{"role":"assistant","content":"hello","timestamp":"2026-11-21T10:00:02Z"}]}',
    )  # fmt: skip
    await parts.archiver.archive([later], NOW_DUE)
    assert await db.fetchval(
        "SELECT array_agg(DISTINCT customer_id) FROM conversation_history"
    ) == ["c-9"]


async def test_messages_land_in_monthly_partitions(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = P.key("months", time.time())
    await P.write(
        redis, key,
        b'{"messages":[{"role":"user","content":"a","timestamp":"2026-01-31T23:59:59Z"},'
        b'{"role":"assistant","content":"b","timestamp":"2026-02-01T00:00:00Z"}]}',
    )  # fmt: skip
    await parts.archiver.archive([key], NOW_DUE)
    placed = await db.fetch(
        "SELECT tableoid::regclass::text AS part FROM conversation_history ORDER BY timestamp"
    )
    assert [r["part"] for r in placed] == [
        "conversation_history_2026_01",
        "conversation_history_2026_02",
    ]


async def test_refused_data_fails_alone_not_the_batch(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    keys = [await write_conversation(redis, f"c{i}") for i in range(5)]
    poison = keys[2]
    real_write = parts.store.write

    async def refuse_poison(
        batch: Sequence[model.Checkpoint],
        dead: Sequence[model.DeadLetter],
        resolved: Sequence[int] = (),
    ) -> dict[str, int]:
        if any(c.source_key == poison for c in batch):
            raise asyncpg.DataError("value refused")
        return await real_write(batch, dead, resolved)

    parts.store.write = refuse_poison  # type: ignore[method-assign]
    outcome = await parts.archiver.archive(keys, NOW_DUE)
    assert (outcome.archived, outcome.dead_letters) == (4, 1)
    assert await db.fetchval("SELECT source_key FROM archive_dead_letters") == poison
    assert await redis.exists(*keys) == 0


async def test_database_down_holds_checkpoints_and_retries_later(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = await write(redis, "conv", "basic.json")
    await redis.pexpire(key, 2000)  # about to expire
    real_write = parts.store.write
    failing = True

    async def down(
        batch: Sequence[model.Checkpoint],
        dead: Sequence[model.DeadLetter],
        resolved: Sequence[int] = (),
    ) -> dict[str, int]:
        if failing:
            raise ConnectionRefusedError("database down")
        return await real_write(batch, dead, resolved)

    parts.store.write = down  # type: ignore[method-assign]
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert (outcome.archived, outcome.held) == (0, 1)
    assert await redis.pttl(key) > 10_000  # kept alive past its TTL
    claim = parts.archiver.redis.layout.claim(key)
    retry_at = await redis.zscore(parts.archiver.redis.layout.deadlines, key)
    assert retry_at is not None and retry_at > time.time() * 1000
    # The claim stays as a back-off until just before the scheduled retry.
    assert 0 < await redis.pttl(claim) < retry_at - time.time() * 1000
    assert (await parts.archiver.archive([key], NOW_DUE)).skipped == 1

    async def backed_off() -> bool:
        return await redis.exists(claim) == 0

    await eventually(backed_off, what="claim back-off over")
    failing = False
    archived = 0

    async def archived_once_the_breaker_closes() -> bool:
        nonlocal archived  # right after a failure, batches are held without trying PostgreSQL
        archived += (await parts.archiver.archive([key], NOW_DUE)).archived
        return archived == 1

    await eventually(archived_once_the_breaker_closes, what="archived after the outage")
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 4


async def test_a_message_id_is_one_row_even_if_its_timestamp_is_reserialised(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    stamps = [
        "2026-11-21T10:00:00Z",
        "2026-11-21T11:00:00.000+01:00",
        "2026-11-21T10:00:00.000001Z",
    ]
    for i, stamp in enumerate(stamps):
        key = P.key("drift", time.time() - 10 + i)
        message = {"id": "m-1", "role": "user", "content": "hi", "timestamp": stamp}
        await P.write(redis, key, orjson.dumps({"messages": [message]}))
        await parts.archiver.archive([key], NOW_DUE)
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 1


async def test_warm_up_prepares_connections_partitions_and_scripts(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    """Before the first burst: pooled connections with the write path prepared, this month's
    and next month's partitions, the Lua scripts loaded; writing afterwards still works."""
    december = datetime(2031, 12, 30, 23, 0, tzinfo=UTC)
    await parts.archiver.redis.load_scripts()
    await parts.store.warm(3, now=december)
    assert parts.store.pool.get_size() >= 3
    partitions = {
        r["name"]
        for r in await db.fetch(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        )
    }
    assert {"conversation_history_2031_12", "conversation_history_2032_01"} <= partitions
    shas = [parts.archiver.redis.script(name).sha for name in checkpoints.SCRIPTS]
    assert await redis.script_exists(*shas) == [True] * len(shas)
    key = await write(redis, "warmed", "basic.json", at=time.time() - 20)
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.archived == 1


async def test_message_times_are_stored_to_the_microsecond_across_the_admitted_years(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    stamps = [
        "1970-01-01T00:00:00Z",
        "2026-11-22T06:00:00.000001+00:00",
        "2026-11-22T07:30:59.123456+01:30",
        "2199-12-31T23:59:59.999999Z",
    ]
    document = {
        "conversation_id": "times",
        "messages": [{"role": "user", "content": f"m{i}", "timestamp": s} for i, s in enumerate(stamps)],
    }  # fmt: skip
    key = P.key("times", time.time())
    await P.write(redis, key, orjson.dumps(document))
    outcome = await parts.archiver.archive([key], NOW_DUE)
    assert (outcome.archived, outcome.messages) == (1, 4)
    stored = [r["timestamp"] for r in await rows(db)]
    assert stored == sorted(datetime.fromisoformat(s).astimezone(UTC) for s in stamps)
