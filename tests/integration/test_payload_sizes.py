"""Huge or slow checkpoints hold no others hostage: sizes are checked in Redis before any value
is read, an oversized value is dead-lettered on its own (first bytes, size, SHA-1), a batch
reads a bounded number of bytes, large payloads decode off the event loop, and a checkpoint
whose writes keep timing out is written alone while the others proceed."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
import structlog

from consumer import archive, codecs, model, service
from tests.conftest import MakeSettings
from tests.integration.test_archive import NOW_DUE, P, payload
from tests.waiting import eventually

MB = 1024 * 1024


def padded(conversation: str, size: int) -> bytes:
    """A valid checkpoint of about `size` bytes (one long message)."""
    message = {"role": "user", "content": "x" * size, "timestamp": "2026-11-21T10:00:00Z"}
    return orjson.dumps({"conversation_id": conversation, "messages": [message]})


async def write(redis: aioredis.Redis, conversation: str, raw: bytes) -> str:
    key = P.key(conversation, time.time())
    await P.write(redis, key, raw)
    return key


async def test_an_oversized_value_is_never_read_whole_and_dead_lettered_alone(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    huge = b'{"messages": [' + b" " * (3 * MB) + b"]}"
    big = await write(redis, "huge", huge)
    small = [await write(redis, f"small-{i}", payload(f"small-{i}")) for i in range(3)]
    async with service.connected(make_settings(max_payload=MB)) as parts:
        claims = await parts.archiver.redis.claim([big], parts.archiver.token, NOW_DUE)
        assert claims[0].status is model.ClaimStatus.OVERSIZED and claims[0].value is None
        assert claims[0].size == len(huge)
        await parts.archiver.redis.release([big], parts.archiver.token)

        outcome = await parts.archiver.archive([big, *small], NOW_DUE)

    assert (outcome.archived, outcome.dead_letters, outcome.held) == (3, 1, 0)
    letter = await db.fetchrow(
        "SELECT raw, digest, size, truncated, error FROM archive_dead_letters"
    )
    assert letter is not None and letter["truncated"] and letter["size"] == len(huge)
    assert bytes(letter["raw"]) == huge[: archive.OVERSIZED_HEAD_BYTES]
    assert letter["digest"] == hashlib.sha1(huge).hexdigest()
    assert "over the limit" in letter["error"]
    assert await redis.exists(big, *small) == 0


async def test_an_oversized_value_rewritten_meanwhile_is_kept(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = await write(redis, "rewritten", b"{" + b" " * (2 * MB) + b"}")
    async with service.connected(make_settings(max_payload=MB)) as parts:
        original = parts.store.write

        async def rewrite_first(*args: Any, **kwargs: Any) -> dict[str, int]:
            await redis.set(key, b"[" + b" " * (2 * MB) + b"]", keepttl=True)  # same size
            return await original(*args, **kwargs)

        parts.store.write = rewrite_first  # type: ignore[method-assign]
        outcome = await parts.archiver.archive([key], NOW_DUE)
    assert outcome.dead_letters == 1
    assert await redis.exists(key) == 1  # its first bytes changed: not the value dead-lettered


async def test_a_batch_reads_a_bounded_number_of_bytes_per_round(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    keys_ = [await write(redis, f"sized-{i}", padded(f"sized-{i}", 300_000)) for i in range(6)]
    lone = await write(redis, "larger-than-a-round", padded("larger-than-a-round", 2 * MB))
    async with service.connected(make_settings(batch_bytes=MB)) as parts:
        with structlog.testing.capture_logs() as logged:
            outcome = await parts.archiver.archive([*keys_, lone], NOW_DUE)
    assert (outcome.archived, outcome.dead_letters) == (7, 0)
    rounds = [e["checkpoints"] for e in logged if e["event"] == "batch.archived"]
    assert len(rounds) >= 3 and max(rounds) <= 3, rounds
    assert (
        await db.fetchval("SELECT count(DISTINCT conversation_id) FROM conversation_history") == 7
    )


@pytest.mark.parametrize("kind", ["large", "pickle"])
async def test_large_payloads_and_pickles_decode_off_the_event_loop(
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    threads: list[threading.Thread] = []
    real = codecs.decode

    def spy(*args: Any, **kwargs: Any) -> model.Checkpoint:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(codecs, "decode", spy)
    small = await write(redis, "small", payload("small"))
    if kind == "large":
        other = await write(redis, "large", padded("large", 2 * archive.DECODE_INLINE_BYTES))
    else:
        other = await write(redis, "pickled", b"\x80\x04K\x01.")
    async with service.connected(make_settings(allow_pickle=True)) as parts:
        await parts.archiver.archive([small, other], NOW_DUE)
    assert len(threads) == 2
    assert all(t is not threading.main_thread() for t in threads)

    threads.clear()
    async with service.connected(make_settings()) as parts:
        await parts.archiver.archive([await write(redis, "tiny", payload("tiny"))], NOW_DUE)
    assert threads == [threading.main_thread()]  # small batches stay inline: no thread hop


async def test_a_checkpoint_that_keeps_timing_out_is_written_alone(
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    admin_database_url: str,
) -> None:
    """A session holds one conversation's row (an interactive transaction left open): every
    batch holding that conversation times out while other batches commit. Its neighbours must
    not wait with it."""
    stuck = await write(redis, "stuck", payload("stuck"))
    neighbours = [await write(redis, f"next-{i}", payload(f"next-{i}")) for i in range(3)]
    batch = [stuck, *neighbours]
    await db.execute(
        "INSERT INTO conversations (tenant_id, conversation_id) VALUES ('t1', 'stuck')"
    )
    holder = await asyncpg.connect(admin_database_url)
    async with service.connected(make_settings(db_timeout="1s", db_retries=1)) as parts:
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM conversations WHERE conversation_id = 'stuck' FOR UPDATE"
                )
                blocked = asyncio.create_task(parts.archiver.archive(batch, NOW_DUE))
                await eventually(lambda: lock_waits(db), what="the batch waits on the row lock")
                other = await write(redis, "other", payload("other"))  # another worker's batch
                assert (await parts.archiver.archive([other], NOW_DUE)).archived == 1
                first = await blocked
                assert (first.held, first.dead_letters) == (4, 0)
                total = model.BatchOutcome()

                async def neighbours_archived() -> bool:
                    total.add(await parts.archiver.archive(batch, NOW_DUE))
                    return total.archived == 3

                await eventually(neighbours_archived, timeout=30, what="neighbours archived")
                assert await redis.exists(stuck) == 1
        finally:
            await holder.close()

        async def stuck_archived() -> bool:
            return (await parts.archiver.archive([stuck], NOW_DUE)).archived == 1

        await eventually(stuck_archived, timeout=30, what="the stuck checkpoint archived")
    assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 0


async def lock_waits(db: asyncpg.Connection) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)
