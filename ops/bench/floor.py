"""The floor: the throughput scenario's rows loaded with no archiver code at all.

Into conversation_history of a fresh database migrated like the archiver's (same partitions,
indexes, and the unique identity index as the arbiter of ON CONFLICT). Per batch: COPY into a
temp staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING, one transaction each,
on `connections` connections. Partitions are made beforehand, outside the timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from .common import Result, pg_connection
from .probes import CpuMeter
from .workload import ROW_COLUMNS, Conversation

_COLUMNS = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_STAGING = """
CREATE TEMP TABLE floor_staging (
    tenant_id text, customer_id text, user_id text, conversation_id text,
    "timestamp" timestamptz, message_role text, message_content text, metadata jsonb,
    message_key text, source_key text
) ON COMMIT DELETE ROWS
"""
_INSERT = f"""
INSERT INTO conversation_history ({_COLUMNS}) SELECT {_COLUMNS} FROM floor_staging
ON CONFLICT DO NOTHING
"""
_UNIQUE = """
SELECT indexdef FROM pg_indexes
WHERE tablename = 'conversation_history' AND indexdef LIKE 'CREATE UNIQUE%'
"""

Batch = list[tuple[Any, ...]]


async def prepare(conn: asyncpg.Connection, conversations: Sequence[Conversation]) -> list[str]:
    """Create the rows' monthly partitions; the unique indexes (ON CONFLICT arbiters)."""
    months = {
        (m.timestamp.year, m.timestamp.month): m.timestamp
        for c in conversations
        for m in c.messages
    }
    for moment in months.values():
        await conn.execute("SELECT archiver_ensure_partition($1)", moment)
    return [r["indexdef"] for r in await conn.fetch(_UNIQUE)]


def batches(conversations: Sequence[Conversation], per_batch: int) -> list[Batch]:
    """Rows grouped as the archiver groups checkpoints (ARCHIVER_BATCH_SIZE per batch)."""
    return [
        [row for c in conversations[i : i + per_batch] for row in c.rows()]
        for i in range(0, len(conversations), per_batch)
    ]


async def _load(pool: asyncpg.Pool, queue: asyncio.Queue[Batch]) -> None:
    async with pool.acquire() as conn:
        while not queue.empty():
            rows = queue.get_nowait()
            async with conn.transaction():
                await conn.copy_records_to_table("floor_staging", records=rows, columns=ROW_COLUMNS)
                await conn.execute(_INSERT)


async def _init(conn: asyncpg.Connection) -> None:
    await conn.execute(_STAGING)


async def run(
    dsn: str,
    conversations: Sequence[Conversation],
    per_batch: int,
    connections: int,
    meter: CpuMeter,
) -> Result:
    """Load every row; rows per second over the whole load, and the CPU it took."""
    async with pg_connection(dsn) as conn:
        indexes = await prepare(conn, conversations)
    work = batches(conversations, per_batch)
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    for rows in work:
        queue.put_nowait(rows)
    pool = await asyncpg.create_pool(dsn, min_size=connections, max_size=connections, init=_init)
    try:
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(_load(pool, queue) for _ in range(connections)))
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
        loaded = await pool.fetchval("SELECT count(*) FROM conversation_history")
    finally:
        await pool.close()
    return {
        "rows": loaded,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(loaded / elapsed, 1),
        "batch_checkpoints": per_batch,
        "connections": connections,
        "cpu": cpu,
        "postgres_cpu_us_per_row": round(cpu["postgres_cpu_s"] * 1e6 / max(1, loaded), 1),
        "unique_indexes": indexes,
    }
