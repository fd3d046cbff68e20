"""Quarantined checkpoints: list them, and replay them after a decoder fix."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import structlog

from consumer import cursors, exceptions, queries, sources, store, terminal

log = structlog.get_logger("consumer.deadletters")


@dataclass(slots=True)
class Replay:
    archived: int = 0
    messages: int = 0
    still_failing: int = 0
    not_found: list[int] = field(default_factory=list)


COLUMNS = [
    terminal.column("id", "id", "number"),
    terminal.column("key", "source_key", "id"),
    terminal.column("bytes", "bytes", "number", drop=3),
    terminal.column("attempts", "attempts", "number", drop=2),
    terminal.column("first seen", "first_seen_at", "time", drop=1),
    terminal.column("resolved", "resolved_at", "time", drop=4),
    terminal.column("error", "error", "prose"),
]


async def listing(
    conn: asyncpg.Connection, include_resolved: bool, limit: int, cursor: str | None = None
) -> cursors.Page:
    """Dead letters by id, `limit` a page; `cursor` continues after the previous page."""
    after = cursors.decode_int("dead-letters", cursor) if cursor else None
    rows = await conn.fetch(queries.get("dead_letters_list"), include_resolved, limit + 1, after)
    page = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    return cursors.Page(page, cursors.encode("dead-letters", page[-1]["id"]) if more else None)


async def replay(the_store: store.Store, source: sources.Source, ids: list[int]) -> Replay:
    """Decode each open dead letter again; archive those that decode now and mark them resolved."""
    async with the_store.pool.acquire() as conn:
        letters = await conn.fetch(queries.get("dead_letters_open"), ids)
    result = Replay(not_found=sorted(set(ids) - {letter["id"] for letter in letters}))
    for letter in letters:
        await _replay_one(the_store, source, letter, result)
    return result


async def _replay_one(
    the_store: store.Store,
    source: sources.Source,
    letter: asyncpg.Record,
    result: Replay,
) -> None:
    try:
        checkpoint = source.decode(letter["source_key"], letter["raw"])
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
