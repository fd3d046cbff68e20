"""A deterministic hook into the archive path: catch a batch between its claim and its commit.

The harness takes `LOCK TABLE conversations IN EXCLUSIVE MODE`; the archiver's batch
transaction then blocks on its first statement (the conversations upsert) after it has
claimed its checkpoints in Redis. Once an archiver backend waits on our lock, the batch's
claim keys are visible in Redis, and the harness can act before letting it commit:

* kill9: `CLIENT PAUSE WRITE` (the compare-and-delete script is a write), release the lock,
  wait for the commit, then SIGKILL the consumer: killed after commit, before the delete.
* rewrite_race: rewrite the claimed checkpoints with new content, then release the lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import redis.asyncio as aioredis

from consumer import keys
from ops.faults.ledger import Ledger

WAITING_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'
"""
BUSY_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (wait_event_type = 'Lock' OR state IN ('active', 'idle in transaction'))
"""
HAVE_SQL = """
SELECT count(*) FROM conversation_history
WHERE (tenant_id, conversation_id, message_key) IN (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))
"""


@asynccontextmanager
async def blocked_batch(database_url: str, patience: float) -> AsyncIterator[bool]:
    """Hold the lock until an archiver batch waits on it (yields True) or `timeout` passes
    (yields False) within `patience` s; leaving the block releases the lock."""
    holder = await asyncpg.connect(database_url, timeout=10)
    watcher = await asyncpg.connect(database_url, timeout=10)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE conversations IN EXCLUSIVE MODE")
        try:
            yield await _until_waiting(watcher, patience)
        finally:
            await transaction.rollback()
    finally:
        await watcher.close()
        await holder.close()


async def _until_waiting(conn: asyncpg.Connection, patience: float) -> bool:
    """Poll from a connection outside any transaction: pg_stat_activity is a snapshot taken
    once per transaction."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if await conn.fetchval(WAITING_SQL):
            return True
        await asyncio.sleep(0.02)
    return False


async def settled(database_url: str, patience: float = 5.0) -> bool:
    """Wait until no archiver backend is inside a statement or transaction (it committed)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if not await conn.fetchval(BUSY_SQL):
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await conn.close()


async def claimed(client: aioredis.Redis, layout: keys.Layout) -> list[str]:
    """Checkpoint keys with a live claim (our claim keys embed the checkpoint key)."""
    prefix = layout.prefix + "claim:"
    found: list[str] = []
    async for raw in client.scan_iter(match=prefix + "*", count=1000):
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        key = layout.checkpoint_of_shadow(layout.shadow_prefix + name[len(prefix) :])
        if key is not None:
            found.append(key)
    return found


async def committed_in_redis(
    database_url: str, client: aioredis.Redis, ledger: Ledger, candidates: list[str]
) -> int:
    """How many of `candidates` are still in Redis with every message already in PostgreSQL."""
    if not candidates:
        return 0
    values = cast(list[bytes | None], await client.mget(candidates))
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        count = 0
        for key, raw in zip(candidates, values, strict=True):
            version = ledger.version(key, raw)
            if version is None or not version.good or not version.identities:
                continue
            columns = [list(c) for c in zip(*version.identities, strict=True)]
            if await conn.fetchval(HAVE_SQL, *columns) == len(version.identities):
                count += 1
        return count
    finally:
        await conn.close()
