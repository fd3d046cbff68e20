"""An erasure's Redis step (ARCHIVER_SOURCE=langgraph-redis: consumer/erasure/langgraph_side.py,
which `erase` and `left` hand over to). seed-json: every checkpoint of the subject, found by
reading the values (the customer and user ids live inside them), deleted with its shadow,
claim, hold mark and deadline-index entry, through the one Redis module
(consumer/checkpoints.py).

A value is deleted only if it still holds what was read (erase.lua compares its SHA-1): one
rewritten meanwhile is read again and judged again, so that no one else's checkpoint is ever
deleted. Memory stays bounded: a SCAN page's values are read in groups of at most
ARCHIVER_BATCH_BYTES; a value over ARCHIVER_MAX_PAYLOAD is never read whole but searched
for the subject's bytes in chunks (as the archive path, it cannot be decoded)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from consumer import checkpoints, exceptions
from consumer.erasure import langgraph_side, subjects

DECODE_INLINE_BYTES = 1024 * 1024  # larger groups are decoded in a thread (as archive.py does)
ATTEMPTS = 5  # reads of a value rewritten while it was being judged, before the step fails


@dataclass(frozen=True, slots=True)
class Scope:
    """Where and how the step looks."""

    redis: checkpoints.Checkpoints
    reader: subjects.Reader
    scan_count: int
    group_bytes: int
    max_payload: int
    langgraph: langgraph_side.Scope | None = None  # ARCHIVER_SOURCE=langgraph-redis


async def left(scope: Scope, subject: subjects.Subject) -> dict[str, int]:
    """What of the subject Redis holds now, by the configured source: seed-json checkpoints,
    or every key of the subject's LangGraph threads. Read only."""
    if scope.langgraph is not None:
        return {"redis_keys": len(await langgraph_side.find(scope.langgraph, subject))}
    return {"redis_checkpoints": len(await find(scope, subject))}


async def find(scope: Scope, subject: subjects.Subject) -> list[tuple[str, str]]:
    """Every checkpoint of the subject now: (key, SHA-1 of the value read). Read only."""
    found: list[tuple[str, str]] = []
    cursor = -1
    while cursor != 0:
        cursor, page = await checkpoints.scan_page(scope.redis, max(cursor, 0), scope.scan_count)
        found += await _judge(scope, subject, page)
    return found


async def erase(scope: Scope, subject: subjects.Subject) -> dict[str, int]:
    """Delete every checkpoint of the subject; counts: checkpoints deleted (and, for the
    langgraph-redis source, keys and threads)."""
    if scope.langgraph is not None:
        return await langgraph_side.erase(scope.langgraph, subject)
    deleted = 0
    cursor = -1
    while cursor != 0:
        cursor, page = await checkpoints.scan_page(scope.redis, max(cursor, 0), scope.scan_count)
        deleted += await _erase_keys(scope, subject, await _judge(scope, subject, page))
    return {"redis_checkpoints": deleted}


async def _erase_keys(scope: Scope, subject: subjects.Subject, read: list[tuple[str, str]]) -> int:
    deleted = 0
    for _ in range(ATTEMPTS):
        if not read:
            return deleted
        results = await checkpoints.erase(scope.redis, read)
        deleted += sum(1 for r in results if r == 1)
        changed = [key for (key, _), r in zip(read, results, strict=True) if r == 0]
        read = await _judge(scope, subject, changed)
    if read:
        raise exceptions.ArchiverError(
            f"{len(read)} checkpoint(s) of the subject kept being rewritten while being erased;"
            " resume the erasure"
        )
    return deleted


async def _judge(
    scope: Scope, subject: subjects.Subject, page: Sequence[str]
) -> list[tuple[str, str]]:
    """The subject's keys among `page`, with the SHA-1 of the value each was judged by. The
    page's values come in one call, within ARCHIVER_BATCH_BYTES; a value past that budget is
    read alone, one over ARCHIVER_MAX_PAYLOAD in chunks."""
    found: list[tuple[str, str]] = []
    read = await checkpoints.read_page(scope.redis, page, scope.max_payload, scope.group_bytes)
    pairs = [(k, v) for k, v in zip(page, read, strict=True) if isinstance(v, bytes)]
    found += await _judge_values(scope, subject, pairs)
    for key, size in zip(page, read, strict=True):
        if isinstance(size, bytes) or size is None:
            continue
        if size > scope.max_payload:
            found += await _judge_oversized(scope, subject, key, size)
        else:
            found += await _judge(scope, subject, [key])
    return found


async def _judge_values(
    scope: Scope, subject: subjects.Subject, pairs: list[tuple[str, bytes]]
) -> list[tuple[str, str]]:
    def judge() -> list[tuple[str, str]]:
        return [
            (key, checkpoints.digest(value))
            for key, value in pairs
            if scope.reader.belongs(subject, key, value)
        ]

    size = sum(len(v) for _, v in pairs)
    return await asyncio.to_thread(judge) if size > DECODE_INLINE_BYTES else judge()


async def _judge_oversized(
    scope: Scope, subject: subjects.Subject, key: str, size: int
) -> list[tuple[str, str]]:
    """A value too large to decode: its bytes are searched in chunks (each chunk with the
    previous one's tail, so that an id across a boundary is found), and its SHA-1 taken."""
    parts = await checkpoints.chunks_of(scope.redis, key, size)
    tail, hit = b"", False
    for part in parts:
        window = tail + part
        hit = hit or scope.reader.belongs(subject, key, window, whole=False)
        tail = part[-4096:]
    if not hit or not parts:
        return []
    value = b"".join(parts)
    return [(key, checkpoints.digest(value))]
