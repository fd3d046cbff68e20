"""Erasure against real Redis and PostgreSQL, run as the archiver's least-privilege ACL user
and writer role: each kind of subject, the fence racing an archive batch, crashes between the
steps, and a subject with data in every place at once (checked by --verify and by queries of
our own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from consumer import erasure, exceptions, fences, jobs, model, periodic, producer, service, settings
from tests.conftest import MakeSettings
from tests.waiting import eventually

KEY = "test-erasure-key-0123456789abcdef"
P = producer.Producer(ttl=30, archive_after=15)
NOW_DUE = 10**9
OLD = datetime.fromisoformat("2026-11-21T10:00:00+00:00")


def payload(
    conversation: str,
    *,
    tenant: str = "acme",
    customer: str | None = None,
    user: str | None = None,
    stamps: tuple[datetime, ...] = (OLD, OLD + timedelta(seconds=5)),
) -> bytes:
    value: dict[str, Any] = {
        "conversation_id": conversation,
        "tenant_id": tenant,
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} of {conversation}",
             "timestamp": moment.isoformat()}
            for i, moment in enumerate(stamps)
        ],
    }  # fmt: skip
    if customer:
        value["customer_id"] = customer
    if user:
        value["user_id"] = user
    return orjson.dumps(value)


async def put(redis: aioredis.Redis, conversation: str, ago: float = 0, **fields: Any) -> str:
    key = P.key(conversation, time.time() - ago)
    await P.write(redis, key, payload(conversation, **fields))
    return key


@pytest.fixture
def s(make_settings: MakeSettings) -> settings.Settings:
    return make_settings(erasure_key=KEY)


@pytest.fixture
async def parts(s: settings.Settings) -> AsyncIterator[service.Parts]:
    async with service.connected(s) as connected:
        yield connected


@pytest.fixture
async def where(s: settings.Settings, parts: service.Parts) -> AsyncIterator[erasure.Surroundings]:
    async with erasure.Surroundings.open(s, parts.pool) as opened:
        yield opened


async def archive(parts: service.Parts, *keys: str) -> model.BatchOutcome:
    outcome = await parts.archiver.archive(list(keys), NOW_DUE)
    assert outcome.errors == 0
    return outcome


async def erase(
    where: erasure.Surroundings, tenant: str, kind: str, subject: str
) -> erasure.Erasure:
    async with where.pool.acquire() as conn:
        requested = await erasure.request(conn, where.key, tenant, kind, subject, "ticket 1")
    return await erasure.run(where, requested.id)


async def messages(db: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await db.fetch("SELECT tenant_id, conversation_id FROM conversation_history")
    return {(r["tenant_id"], r["conversation_id"]) for r in rows}


async def conversation_rows(db: asyncpg.Connection) -> set[tuple[str, str]]:
    rows = await db.fetch("SELECT tenant_id, conversation_id FROM conversations")
    return {(r["tenant_id"], r["conversation_id"]) for r in rows}


async def everyone(redis: aioredis.Redis) -> list[str]:
    """Checkpoints of three customers of acme, one of them with two conversations, and the
    same customer id in another tenant."""
    return [
        await put(redis, "c-anna-1", customer="anna", user="u-anna"),
        await put(redis, "c-anna-2", customer="anna", user="u-anna"),
        await put(redis, "c-bob-1", customer="bob", user="u-bob"),
        await put(redis, "c-annabel-1", customer="annabel", user="u-annabel"),
        await put(redis, "c-anna-1", 2, tenant="globex", customer="anna", user="u-anna"),
    ]


ALL = {
    ("acme", "c-anna-1"), ("acme", "c-anna-2"), ("acme", "c-bob-1"), ("acme", "c-annabel-1"),
    ("globex", "c-anna-1"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "subject", "gone"),
    [
        ("customer", "anna", {("acme", "c-anna-1"), ("acme", "c-anna-2")}),
        ("user", "u-anna", {("acme", "c-anna-1"), ("acme", "c-anna-2")}),
        ("conversation", "c-anna-1", {("acme", "c-anna-1")}),
    ],
)
async def test_each_kind_of_subject_is_erased_in_its_tenant_only(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection, kind: str, subject: str, gone: set[tuple[str, str]],
) -> None:  # fmt: skip
    await archive(parts, *await everyone(redis))
    assert await messages(db) == ALL
    done = await erase(where, "acme", kind, subject)
    assert done.status == "completed"
    assert done.counts["postgres_messages"] == 2 * len(gone)
    assert done.counts["conversations_removed"] == len(gone)
    assert await messages(db) == ALL - gone
    assert await conversation_rows(db) == ALL - gone
    check = await erasure.verify(where, done.id, subject)
    assert check.ok, check.places
    # the audit trail names no one, and the working state went with completion
    trail = await db.fetchrow("SELECT * FROM erasures WHERE id = $1", done.id)
    assert trail is not None
    assert subject not in orjson.dumps(dict(trail), default=str).decode()
    assert trail["subject_hash"] == fences.subject_hash(KEY.encode(), "acme", kind, subject)
    assert await db.fetchval("SELECT count(*) FROM erasure_work") == 0


async def test_fence_refuses_what_came_before_and_archives_what_came_after(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    await archive(parts, await put(redis, "c-anna-1", customer="anna"))
    done = await erase(where, "acme", "customer", "anna")
    later = done.requested_at + timedelta(minutes=1)
    # a checkpoint written later carries the old messages again, and one new one
    again = await put(
        redis, "c-anna-1", customer="anna", stamps=(OLD, OLD + timedelta(seconds=5), later)
    )
    other = await put(redis, "c-bob-1", customer="bob")
    outcome = await archive(parts, again, other)
    assert (outcome.archived, outcome.messages) == (2, 3)
    rows = await db.fetch(
        'SELECT conversation_id, "timestamp" FROM conversation_history ORDER BY 1, 2'
    )
    assert [(r["conversation_id"], r["timestamp"]) for r in rows] == [
        ("c-anna-1", later), ("c-bob-1", OLD), ("c-bob-1", OLD + timedelta(seconds=5)),
    ]  # fmt: skip
    assert await redis.exists(again) == 0  # archived (what was left of it): gone from Redis
    assert (await erasure.verify(where, done.id, "anna")).ok


async def test_a_conversation_known_to_be_the_customers_is_fenced_without_its_id(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    await archive(parts, await put(redis, "c-anna-1", customer="anna"))
    await erase(where, "acme", "customer", "anna")
    await archive(parts, await put(redis, "c-anna-1"))  # names no customer this time
    assert await messages(db) == set()
    assert await conversation_rows(db) == set()


class Gate:
    """Holds an archive batch at a point until let go."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await self.go.wait()


async def test_a_batch_claimed_before_the_erasure_and_committed_after_inserts_nothing(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    key = await put(redis, "c-anna-1", customer="anna")
    gate = Gate()
    write = parts.store.write

    async def held_write(*args: Any, **kwargs: Any) -> dict[str, int]:
        await gate.hold()  # claimed and decoded; the transaction is not open yet
        return await write(*args, **kwargs)

    monkeypatch.setattr(parts.store, "write", held_write)
    batch = asyncio.create_task(parts.archiver.archive([key], NOW_DUE))
    await asyncio.wait_for(gate.reached.wait(), 10)
    async with where.pool.acquire() as conn:
        requested = await erasure.request(conn, where.key, "acme", "customer", "anna")
    gate.go.set()
    outcome = await batch
    assert (outcome.archived, outcome.messages, outcome.errors) == (1, 0, 0)
    assert await messages(db) == set()
    assert await conversation_rows(db) == set()
    done = await erasure.run(where, requested.id)
    assert (await erasure.verify(where, done.id, "anna")).ok


async def test_a_batch_inside_its_transaction_commits_before_the_tombstone_then_is_erased(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    key = await put(redis, "c-anna-1", customer="anna")
    gate = Gate()
    fence = fences.apply

    async def held_fence(*args: Any) -> fences.Fenced:
        found = await fence(*args)  # the erasure lock is held (shared) from here on
        await gate.hold()
        return found

    monkeypatch.setattr(fences, "apply", held_fence)
    batch = asyncio.create_task(parts.archiver.archive([key], NOW_DUE))
    await asyncio.wait_for(gate.reached.wait(), 10)

    async def tombstone() -> erasure.Erasure:
        async with where.pool.acquire() as conn:
            return await erasure.request(conn, where.key, "acme", "customer", "anna")

    requested = asyncio.create_task(tombstone())

    async def waiting_for_the_lock() -> bool:
        return bool(await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ))  # fmt: skip

    await eventually(waiting_for_the_lock, what="the tombstone waiting for the batch")
    assert not requested.done()
    gate.go.set()
    assert (await batch).messages == 2  # committed first: its rows exist for a moment
    done = await erasure.run(where, (await requested).id)
    assert done.counts["postgres_messages"] == 2
    assert await messages(db) == set()
    assert (await erasure.verify(where, done.id, "anna")).ok


class Crash(Exception):
    pass


def crash_after(wanted: str) -> Callable[[str], Awaitable[None]]:
    async def between(step: str) -> None:
        if step == wanted:
            raise Crash(step)

    return between


@pytest.mark.parametrize("step", erasure.STEPS)
async def test_a_crash_after_any_step_is_resumed(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection, step: str,
) -> None:  # fmt: skip
    await archive(parts, *await everyone(redis))
    await put(redis, "c-anna-3", customer="anna")  # live in Redis, not archived
    async with where.pool.acquire() as conn:
        requested = await erasure.request(conn, where.key, "acme", "customer", "anna")
    with pytest.raises(Crash):
        await erasure.run(where, requested.id, crash_after(step))
    async with where.pool.acquire() as conn:
        stopped = await erasure.status(conn, requested.id)
    assert (stopped.status, stopped.step) == ("running", erasure.NEXT[step])
    done = await erasure.run(where, requested.id)  # --resume
    assert done.status == "completed"
    assert done.counts["redis_checkpoints"] == 1
    assert await messages(db) == ALL - {("acme", "c-anna-1"), ("acme", "c-anna-2")}
    assert (await erasure.verify(where, done.id, "anna")).ok


async def test_the_periodic_job_resumes_a_request_left_before_its_first_step(
    s: settings.Settings, parts: service.Parts, where: erasure.Surroundings,
    redis: aioredis.Redis, db: asyncpg.Connection,
) -> None:  # fmt: skip
    await archive(parts, *await everyone(redis))
    async with where.pool.acquire() as conn:  # killed right after the tombstone
        requested = await erasure.request(conn, where.key, "acme", "user", "u-bob")
    outcome = await jobs.Runner(parts.jobs_pool, s).run(periodic.named(s, "erasure"))
    assert outcome is not None and outcome.status == "ok", outcome
    assert outcome.counts == {"unfinished": 1, "completed": 1}
    async with where.pool.acquire() as conn:
        assert (await erasure.status(conn, requested.id)).status == "completed"
    assert await messages(db) == ALL - {("acme", "c-bob-1")}


async def test_a_subject_everywhere_at_once_is_gone_everywhere(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    await archive(parts, *await everyone(redis))
    live = await put(redis, "c-anna-9", customer="anna")  # in Redis only
    bob_live = await put(redis, "c-bob-9", customer="bob")
    broken = P.key("c-anna-7", time.time())  # undecodable, naming her: a dead letter
    await P.write(redis, broken, b'{"tenant_id": "acme", "customer_id": "anna", "messages": [')
    broken_bob = P.key("c-bob-7", time.time())
    await P.write(redis, broken_bob, b'{"tenant_id": "acme", "customer_id": "bob", "messages": [')
    await archive(parts, broken, broken_bob)
    assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 2
    preview = await erasure.preview(where, "acme", "customer", "anna")
    assert preview["redis_checkpoints"] == 1
    assert preview["conversation_history"] == 4
    assert preview["conversations"] == 2
    assert preview["archive_dead_letters"] == 1
    done = await erase(where, "acme", "customer", "anna")
    assert done.counts["redis_checkpoints"] == 1
    assert done.counts["dead_letters"] == 1
    check = await erasure.verify(where, done.id, "anna")
    assert check.ok, check.places
    assert check.places["conversation_history"] == 0
    assert check.places["erasures"] == 0 and "archive_runs" in check.places
    # our own queries: nothing of anna in acme; bob and the other tenant untouched
    assert await redis.exists(live) == 0 and await redis.exists(bob_live) == 1
    assert await redis.zscore(parts.archiver.redis.layout.deadlines, live) is None
    assert not await redis.keys("*c-anna-9*")
    assert await db.fetchval(
        "SELECT count(*) FROM conversation_history WHERE tenant_id = 'acme' AND customer_id = 'anna'"
    ) == 0  # fmt: skip
    assert await db.fetchval(
        "SELECT count(*) FROM archive_dead_letters WHERE position('anna' IN encode(raw, 'escape')) > 0"
    ) == 0  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 1
    assert await messages(db) == ALL - {("acme", "c-anna-1"), ("acme", "c-anna-2")}


async def test_verify_finds_what_is_left_and_wants_the_subject_of_a_completed_erasure(
    parts: service.Parts, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    await archive(parts, *await everyone(redis))
    done = await erase(where, "acme", "customer", "bob")
    await db.execute(
        "INSERT INTO conversation_history (tenant_id, customer_id, conversation_id, \"timestamp\","
        " message_role, message_content, message_key, source_key)"
        " VALUES ('acme', 'bob', 'c-x', $1, 'user', 'left behind', 'k', 's')", OLD,
    )  # fmt: skip
    check = await erasure.verify(where, done.id, "bob")
    assert not check.ok and check.places["conversation_history"] == 1
    with pytest.raises(exceptions.UsageError):
        await erasure.verify(where, done.id)
    with pytest.raises(exceptions.UsageError):
        await erasure.verify(where, done.id, "anna")


async def test_an_archiver_without_the_key_holds_batches_of_tenants_with_erasures(
    make_settings: MakeSettings, where: erasure.Surroundings, redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    async with where.pool.acquire() as conn:
        await erasure.request(conn, where.key, "acme", "customer", "anna")
    async with service.connected(make_settings()) as keyless:
        held = await keyless.archiver.archive(
            [await put(redis, "c-anna-1", customer="anna")], NOW_DUE
        )
        other = await keyless.archiver.archive([await put(redis, "c-x", tenant="globex")], NOW_DUE)
    assert (held.held, held.archived) == (1, 0)
    assert (other.held, other.archived) == (0, 1)
    assert await messages(db) == {("globex", "c-x")}
