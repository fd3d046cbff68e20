"""Scenario `langgraph`: ARCHIVER_SOURCE=langgraph-redis throughput against the floor.

T threads of M checkpoints each, written as langgraph-checkpoint-redis's RedisSaver writes them:
RedisJSON documents `checkpoint:{thread}:__empty__:{uuid6}`, each holding the thread's whole
message list (LangChain constructor JSON), one message more than its parent, and the thread's
`checkpoint_latest` pointer. They go into a private Redis Stack (Redis 7.4.1, RedisJSON and
RediSearch; ops/redisstack.py) while one `archiver run` of that source is subscribed
(notifications `Exgd`), with TTLs that put every document due at T0: their shadows, armed from
the `json.set`/`expire` events, fire together. Each message is one row: T x M rows from
T x M documents holding T x M x (M + 1) / 2 message copies.

Measured as `throughput` measures: T0 -> max(archived_at), distinct rows per second, against
the floor measured in the same run (the same T x M messages, as T conversations of M messages,
loaded by COPY + INSERT ... ON CONFLICT before and after the archiver).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from consumer.demo import embedded as servers
from consumer.sources.langgraph_redis import UUID_EPOCH_OFFSET
from ops import redisstack

from . import floor, procs, stack
from .common import Context, Result, archived_so_far, pg_connection, ratio, redis_client, rounded
from .probes import wait_for
from .throughput import _FINAL, BUFFER_S, WINDOWS
from .workload import Conversation, Message

NOTIFY = "Exgd"  # d: json.set (module events); g: expire; x: expired
CHUNK = 500
KINDS = {"user": ("HumanMessage", "human"), "assistant": ("AIMessage", "ai")}


def uuid6(ms: int, sequence: int) -> str:
    """A UUID v6 (time-ordered, as the checkpointer's ids) for `ms`, unique by `sequence`."""
    ticks = ms * 10_000 + UUID_EPOCH_OFFSET + sequence % 10_000
    hexa = f"{ticks >> 12:012x}6{ticks & 0xFFF:03x}{0x8000 | (sequence & 0x3FFF):04x}"
    hexa += f"{sequence:012x}"[-12:]
    return f"{hexa[0:8]}-{hexa[8:12]}-{hexa[12:16]}-{hexa[16:20]}-{hexa[20:32]}"


def _lc(m: Message, ident: str) -> dict[str, Any]:
    cls, kind = KINDS[m.role]
    kwargs: dict[str, Any] = {"content": m.content, "type": kind, "id": ident}
    if m.metadata:
        kwargs["additional_kwargs"] = m.metadata
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", cls],
            "kwargs": kwargs}  # fmt: skip


def documents(c: Conversation, base_ms: int, sequence: int) -> list[tuple[str, bytes]]:
    """The thread's checkpoints, oldest first: (key, JSON document)."""
    thread = c.conversation_id
    messages = [_lc(m, f"{thread}-{i}") for i, m in enumerate(c.messages)]
    found, parent = [], ""
    for step in range(len(messages)):
        ident = uuid6(base_ms + step, sequence + step)
        doc = {
            "thread_id": thread, "checkpoint_ns": "__empty__", "checkpoint_id": ident,
            "parent_checkpoint_id": parent, "checkpoint_ts": base_ms + step,
            "checkpoint": {"v": 1, "id": ident, "ts": c.messages[step].timestamp.isoformat(),
                           "channel_values": {"messages": messages[: step + 1]},
                           "channel_versions": {}, "versions_seen": {}},
            "metadata": orjson.dumps({"source": "loop", "step": step}).decode(),
            "step": step, "source": "loop", "has_writes": False,
        }  # fmt: skip
        found.append((f"checkpoint:{thread}:__empty__:{ident}", orjson.dumps(doc)))
        parent = ident
    return found


async def _write(url: str, threads: Sequence[Conversation], expire_ms: int) -> int:
    """Every thread's documents, a pipelined transaction per CHUNK threads; documents written."""
    written, base_ms = 0, int(time.time() * 1000)
    async with redis_client(url) as client:
        for start in range(0, len(threads), CHUNK):
            async with client.pipeline(transaction=True) as pipe:
                for i, c in enumerate(threads[start : start + CHUNK]):
                    docs = documents(c, base_ms, (start + i) * 1_000)
                    for key, doc in docs:
                        pipe.execute_command("JSON.SET", key, "$", doc)
                        pipe.pexpireat(key, expire_ms)
                    pipe.set(f"checkpoint_latest:{c.conversation_id}:__empty__", docs[-1][0])
                    written += len(docs)
                await pipe.execute()
    return written


def _stack(ctx: Context) -> servers.RedisServer:
    server = servers.RedisServer(
        ctx.folder("langgraph") / "redis-stack", extra_config=stack.REDIS_CONFIG,
        binary=redisstack.ensure(), modules=redisstack.modules(),
    )  # fmt: skip
    server.start()
    return server


async def run(ctx: Context) -> Result:
    threads = ctx.gen.batch("lg", ctx.cfg.langgraph_threads, int(time.time()))
    n = len(threads) * ctx.cfg.messages
    before = await _floor_run(ctx, threads, "lg_floor_before")
    dsn = await ctx.stack.fresh_database("langgraph")
    redis = _stack(ctx)
    try:
        async with redis_client(redis.url) as client:
            await client.config_set("notify-keyspace-events", NOTIFY)
        env = procs.archiver_env(
            redis.url, dsn, ctx.folder("langgraph"), source="langgraph-redis",
            queue_size=max(20_000, n + 1_000), **WINDOWS,
        )  # fmt: skip
        async with procs.archiver_run(env, ctx.folder("langgraph") / "archiver.log") as archiver:
            t0_ms = int(time.time() * 1000) + 2_000 + n // 5  # after the load (~0.2 ms/doc)
            # Due (PTTL <= the buffer) at T0: their shadows, armed from PTTL - buffer, fire then.
            written = await _write(redis.url, threads, t0_ms + BUFFER_S * 1000)
            loaded_ms = time.time() * 1000
            meter = ctx.cpu_meter(archiver)
            meter.start()
            await _wait_archived(archiver, written)
            cpu = meter.stop()
    finally:
        redis.stop()
    result = await _measure(dsn, t0_ms, written, ctx.cfg.messages)
    result |= {"threads": len(threads), "load_overran_ms": max(0, round(loaded_ms - t0_ms)),
               "cpu_archiver_s": cpu.get("archiver_cpu_s")}  # fmt: skip
    after = await _floor_run(ctx, threads, "lg_floor_after")
    mean = round((before["rows_per_s"] + after["rows_per_s"]) / 2, 1)
    return result | {
        "floor_rows_per_s": mean,
        "floor": {"before": before, "after": after},
        "ratio_vs_floor": ratio(result["msgs_per_s"], mean),
    }


async def _wait_archived(archiver: procs.Archiver, n: int) -> None:
    async def done() -> bool:
        return await archived_so_far(archiver) >= n

    await wait_for(done, within=max(120.0, n / 50), what=f"{n} documents archived", every=1.0)


async def _measure(dsn: str, t0_ms: int, documents_: int, messages: int) -> Result:
    async with pg_connection(dsn) as conn:
        row = await conn.fetchrow(_FINAL)
    assert row is not None
    elapsed = float(row["last_at"]) - t0_ms / 1000
    copies = documents_ // messages * messages * (messages + 1) // 2
    return {
        "documents": documents_,
        "message_copies": copies,
        "rows": row["rows"],
        "expected_rows": documents_,
        "elapsed_s": round(elapsed, 3),
        "documents_per_s": rounded(documents_ / elapsed),
        "msgs_per_s": rounded(row["rows"] / elapsed),
        "measured": "first shadow due (T0) -> max(archived_at) (start of the last transaction)",
    }


async def _floor_run(ctx: Context, threads: list[Conversation], name: str) -> Result:
    dsn = await ctx.stack.fresh_database(name)
    cfg = ctx.cfg
    return await floor.run(
        dsn, threads, cfg.floor_batch, cfg.floor_connections, ctx.cpu_meter(None)
    )
