"""Quarantined checkpoints: list them, and replay them after a decoder fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from rich.console import Console
from rich.table import Table

from consumer import codecs, exceptions, keys, queries, store

log = structlog.get_logger("consumer.deadletters")


@dataclass(slots=True)
class Replay:
    archived: int = 0
    messages: int = 0
    still_failing: int = 0


async def listing(
    conn: asyncpg.Connection, include_resolved: bool, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(queries.get("dead_letters_list"), include_resolved, limit)
    return [dict(r) for r in rows]


async def replay(
    the_store: store.Store, layout: keys.Layout, codec: codecs.CodecOptions, ids: list[int]
) -> Replay:
    """Decode each open dead letter again; archive those that decode now and mark them resolved."""
    async with the_store.pool.acquire() as conn:
        letters = await conn.fetch(queries.get("dead_letters_open"), ids)
    result = Replay()
    for letter in letters:
        await _replay_one(the_store, layout, codec, letter, result)
    return result


async def _replay_one(
    the_store: store.Store,
    layout: keys.Layout,
    codec: codecs.CodecOptions,
    letter: asyncpg.Record,
    result: Replay,
) -> None:
    try:
        checkpoint = _decode(layout, codec, letter["source_key"], letter["raw"])
        counts = await the_store.write([checkpoint], [], resolved=[letter["id"]])
    except (exceptions.DecodeError, asyncpg.DataError) as exc:
        async with the_store.pool.acquire() as conn:
            await conn.execute(queries.get("dead_letters_failed_again"), letter["id"], str(exc))
        result.still_failing += 1
        log.warning("dead_letter.still_failing", id=letter["id"], error=str(exc))
        return
    result.archived += 1
    result.messages += counts.get(checkpoint.source_key, 0)
    log.info("dead_letter.replayed", id=letter["id"], conversation_id=checkpoint.conversation_id)


def _decode(layout: keys.Layout, codec: codecs.CodecOptions, key: str, raw: bytes) -> Any:
    info = layout.parse(key)
    if info is None:
        raise exceptions.DecodeError("key does not match ARCHIVER_KEY_PATTERN")
    return codecs.decode(
        key, raw, key_conversation_id=info.conversation_id, key_time=info.written_at, options=codec
    )


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table()
    for column in ("id", "key", "bytes", "attempts", "first seen", "resolved", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        resolved = r["resolved_at"].isoformat(timespec="seconds") if r["resolved_at"] else ""
        table.add_row(
            str(r["id"]), r["source_key"], str(r["bytes"]), str(r["attempts"]),
            r["first_seen_at"].isoformat(timespec="seconds"), resolved, r["error"],
        )  # fmt: skip
    console.print(table)
