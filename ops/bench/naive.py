"""Scenario `naive`: the seed's design on the throughput scenario's data (its first N):
per checkpoint GET, decode, one transaction with one INSERT per message, commit, DEL."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from . import redisload
from .common import Context, Result, pg_connection, ratio, redis_client
from .workload import ROW_COLUMNS

_COLUMNS = ", ".join('"' + c + '"' for c in ROW_COLUMNS)
_INSERT = (
    f"INSERT INTO conversation_history ({_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)"
)


def _values(key: str, doc: dict[str, Any], index: int, m: dict[str, Any]) -> tuple[Any, ...]:
    stamp = datetime.fromisoformat(m["timestamp"])
    ident = hashlib.sha256(f"{m['role']}\x1f{m['timestamp']}\x1f{m['content']}\x1f{index}".encode())
    return (
        doc["tenant_id"], doc.get("customer_id"), doc.get("user_id"), doc["conversation_id"],
        stamp, m["role"], m["content"], orjson.dumps(m.get("metadata") or {}).decode(),
        "h:" + ident.hexdigest()[:32], key,
    )  # fmt: skip


async def archive_one(client: aioredis.Redis, conn: asyncpg.Connection, key: str) -> int:
    raw = await client.get(key)
    if raw is None:
        return 0
    doc = orjson.loads(raw)
    async with conn.transaction():
        for index, m in enumerate(doc["messages"]):
            await conn.execute(_INSERT, *_values(key, doc, index, m))
    await client.delete(key)
    return len(doc["messages"])


async def run(ctx: Context) -> Result:
    conversations = ctx.throughput_data()[: ctx.cfg.naive_n]
    dsn = await ctx.stack.fresh_database("naive")
    await ctx.reset_redis(notify="")
    expire_ms = int(time.time() * 1000) + 86_400_000
    entries = [redisload.Entry(c.key, c.payload(), expire_ms) for c in conversations]
    async with redis_client(ctx.stack.redis_url) as client, pg_connection(dsn) as conn:
        await redisload.write(client, entries)
        await conn.execute("SELECT archiver_ensure_partition(now())")
        await conn.execute("SELECT archiver_ensure_partition(now() - interval '1 day')")
        meter = ctx.cpu_meter(None)
        meter.start()
        started = time.perf_counter()
        rows = 0
        for entry in entries:
            rows += await archive_one(client, conn, entry.key)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    ckpt_per_s = len(entries) / elapsed
    return {
        "checkpoints": len(entries),
        "rows": rows,
        "elapsed_s": round(elapsed, 3),
        "ckpt_per_s": round(ckpt_per_s, 1),
        "ratio_vs_naive": ratio(ctx.throughput_ckpt_per_s, ckpt_per_s),
        "floor_vs_naive": ratio(ctx.floor_ckpt_per_s, ckpt_per_s),
        "cpu": cpu
        | {"postgres_cpu_us_per_row": round(cpu["postgres_cpu_s"] * 1e6 / max(1, rows), 1)},
    }
