"""An erasure's Redis step for ARCHIVER_SOURCE=langgraph-redis: every thread of the subject,
found by reading LangGraph's checkpoint documents, deleted whole (every key of every family:
checkpoint, checkpoint_latest, checkpoint_write, write_keys_zset, ShallowRedisSaver's key and
write_registry) with the archiver's own shadow, claim, hold mark and deadline-index entries.

Two passes over the keyspace, SCAN pages of ARCHIVER_SCAN_COUNT:
1. threads: every `checkpoint:*` document (root, subgraph, ShallowRedisSaver's) that may be
   the subject's (when no state field gives the tenant, the conversation or the subject's kind
   of id, its `thread_id` is read first and the mapping of it alone rules most out), read with
   JSON.GET GROUP at a time (fewer once documents are large: a group stays near
   ARCHIVER_BATCH_BYTES) and judged off the event loop past DECODE_INLINE_BYTES. A root
   document is decoded as the archive path decodes it (ARCHIVER_THREAD_PATTERN and
   ARCHIVER_STATE_FIELDS applied) and is the subject's if it holds something of it from before
   the erasure (Subject.owns); a subgraph document, whose state names no one, by the mapping of
   its thread id alone and its checkpoint.ts. A document that cannot be decoded (its thread id
   does not match the pattern) is matched by its bytes, as the seed-json step does.
2. keys: every key of the five families (`[cw][hr]*`), attributed to the longest known thread
   id that, followed by a colon, starts its name after the family (thread ids may hold colons:
   `a` and `a:b` are two threads), and for a document to the thread its `thread_id` names.
   The subject's are deleted; the pass is repeated until it finds nothing (a graph still
   running may write more), ATTEMPTS times at most.

The checkpointer stores no tenant, user or customer id: without a mapping, only a conversation
(the thread id, in the default tenant) can be matched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from redis import exceptions as redis_exceptions

from consumer import checkpoints, exceptions, model
from consumer.erasure import subjects
from consumer.sources import langgraph_redis

FAMILIES = (
    "checkpoint:", "checkpoint_latest:", "checkpoint_write:", "write_keys_zset:",
    "write_registry:",
)  # fmt: skip
DOCUMENTS = ("checkpoint:", "checkpoint_write:")  # families whose keys hold a thread_id field
FAMILY_MATCH = "[cw][hr]*"  # a SCAN MATCH covering the five families (and not archiver:*)
GROUP = 32  # documents read per round trip at most (fewer when they are large)
DECODE_INLINE_BYTES = 1024 * 1024  # larger groups are judged in a thread
ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Scope:
    """Where and how the step looks."""

    redis: checkpoints.Checkpoints
    source: langgraph_redis.LangGraphRedis
    scan_count: int
    group_bytes: int = 16 * 1024 * 1024  # ARCHIVER_BATCH_BYTES


@dataclass(slots=True)
class Threads:
    """The subject's threads, and the others' thread ids that hold a colon (one of them may
    extend a thread id of the subject: its keys are not the subject's)."""

    mine: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)

    def owner(self, key: str) -> str | None:
        """The subject's thread that a key's name belongs to, if any."""
        family = next((f for f in FAMILIES if key.startswith(f)), None)
        if family is None:
            return None
        rest, best = key[len(family) :], None
        colon = rest.find(":")
        while colon >= 0:
            prefix = rest[:colon]
            if prefix in self.mine or prefix in self.others:
                best = prefix
            colon = rest.find(":", colon + 1)
        return best if best in self.mine else None


async def threads_of(scope: Scope, subject: subjects.Subject) -> Threads:
    """Pass 1: the subject's threads (read only)."""
    found, largest = Threads(), 0
    cursor = -1
    while cursor != 0:
        match = langgraph_redis.PREFIX + "*"
        cursor, page = await checkpoints.scan_keys(scope.redis, max(cursor, 0), match,
                                                   scope.scan_count)  # fmt: skip
        largest = await _judge_page(scope, subject, page, found, largest)
    found.others -= found.mine
    return found


async def _judge_page(
    scope: Scope, subject: subjects.Subject, page: list[str], found: Threads, largest: int
) -> int:
    """Judge a page's documents, GROUP at a time, fewer once documents are large (a group
    stays near ARCHIVER_BATCH_BYTES); the largest document size seen so far. Documents whose
    thread id alone rules them out are not read whole."""
    if thread_decides(scope.source, subject):
        page = await _not_ruled_out(scope, subject, page, found)
    start = 0
    while start < len(page):
        size = max(1, min(GROUP, scope.group_bytes // max(1, largest)))
        judged, largest = await _judge_group(scope, subject, page[start : start + size], largest)
        start += size
        for thread, mine in judged:
            if mine:
                found.mine.add(thread)
            elif ":" in thread:
                found.others.add(thread)
    return largest


def thread_decides(source: langgraph_redis.LangGraphRedis, subject: subjects.Subject) -> bool:
    """Whether a thread id alone can rule a thread out: no state field gives the tenant, the
    conversation or the subject's own kind of id (ARCHIVER_THREAD_PATTERN or the default do)."""
    wanted = {"tenant_id", "conversation_id", f"{subject.kind}_id"}
    return not any(name in wanted for name, _ in source.mapping.state_fields)


async def _not_ruled_out(
    scope: Scope, subject: subjects.Subject, page: list[str], found: Threads
) -> list[str]:
    """The keys of `page` whose documents must be read whole: their thread id may be the
    subject's (or does not match the pattern: their bytes are searched)."""
    replies = await checkpoints.documents(scope.redis, page, "$.thread_id")
    kept = []
    for key, reply in zip(page, replies, strict=True):
        thread = _first_text(reply)
        if thread is None:
            continue  # gone, or a stub without its thread yet
        if _named_by_thread(scope.source, subject, thread):
            kept.append(key)
        elif ":" in thread:
            found.others.add(thread)
    return kept


def _first_text(reply: bytes | None) -> str | None:
    try:
        found = orjson.loads(reply) if reply is not None else None
    except orjson.JSONDecodeError:
        return None
    first = found[0] if isinstance(found, list) and found else None
    return first if isinstance(first, str) and first else None


def _named_by_thread(
    source: langgraph_redis.LangGraphRedis, subject: subjects.Subject, thread: str
) -> bool:
    """The thread id may name the subject (or cannot be mapped: look at the document)."""
    default = source.options.default_tenant
    try:
        mapped = source.mapping.of(thread, {})
    except exceptions.DecodeError:
        return True
    named = model.Checkpoint(
        "", mapped.get("conversation_id", thread), mapped.get("tenant_id", default),
        mapped.get("customer_id"), mapped.get("user_id"), (),
    )  # fmt: skip
    return subject.names(named)


async def _judge_group(
    scope: Scope, subject: subjects.Subject, group: Sequence[str], largest: int
) -> tuple[list[tuple[str, bool]], int]:
    values = await checkpoints.documents(scope.redis, group)
    pairs = [(k, v) for k, v in zip(group, values, strict=True) if v is not None]
    largest = max([largest, *(len(v) for _, v in pairs)])

    def judge() -> list[tuple[str, bool]]:
        return [j for key, raw in pairs if (j := judge_document(scope.source, subject, key, raw))]

    size = sum(len(v) for _, v in pairs)
    return (await asyncio.to_thread(judge) if size > DECODE_INLINE_BYTES else judge()), largest


def judge_document(
    source: langgraph_redis.LangGraphRedis, subject: subjects.Subject, key: str, raw: bytes
) -> tuple[str, bool] | None:
    """(the document's thread, whether it makes that thread the subject's); None if it names
    no thread (a stub the checkpointer has not finished writing)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    thread = document.get("thread_id") if isinstance(document, dict) else None
    if not isinstance(thread, str) or not thread:
        return None
    if not subject.may_hold(raw, thread):
        return thread, False
    return thread, _owns(source, subject, key, raw, document, thread)


def _owns(
    source: langgraph_redis.LangGraphRedis, subject: subjects.Subject, key: str, raw: bytes,
    document: dict[str, object], thread: str,
) -> bool:  # fmt: skip
    default = source.options.default_tenant
    try:
        if source.is_checkpoint(key):  # a root checkpoint: as the archive path decodes it
            decoded = source.decode(key, raw)
            if decoded.messages:
                return subject.owns(decoded)
            # A thread's first checkpoint holds no message yet: its own time tells.
            return subject.names(decoded) and _stamped_before(document, subject.requested_at)
        mapped = source.mapping.of(thread, {})
    except exceptions.NotReadyError:
        return False
    except exceptions.DecodeError:
        return subject.mentions(raw, thread, default)
    named = model.Checkpoint(
        key, mapped.get("conversation_id", thread), mapped.get("tenant_id", default),
        mapped.get("customer_id"), mapped.get("user_id"), (),
    )  # fmt: skip
    return subject.names(named) and _stamped_before(document, subject.requested_at)


def _stamped_before(document: dict[str, object], moment: datetime) -> bool:
    """Whether a checkpoint was written at or before `moment` (unknown: yes)."""
    checkpoint = document.get("checkpoint")
    stamp = checkpoint.get("ts") if isinstance(checkpoint, dict) else None
    try:
        written = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        written = None
    if written is None:
        return True
    return (written if written.tzinfo else written.replace(tzinfo=UTC)) <= moment


async def keys_of(scope: Scope, threads: Threads) -> list[str]:
    """Pass 2: every key of the subject's threads now (read only)."""
    found: list[str] = []
    cursor = -1
    while cursor != 0 and threads.mine:
        cursor, page = await checkpoints.scan_keys(scope.redis, max(cursor, 0), FAMILY_MATCH,
                                                   scope.scan_count)  # fmt: skip
        named = [k for k in page if threads.owner(k) is not None]
        found += await _confirmed(scope, threads, named)
    return found


async def _confirmed(scope: Scope, threads: Threads, named: list[str]) -> list[str]:
    """The keys whose document, if they hold one, names one of the subject's threads."""
    documents = [k for k in named if k.startswith(DOCUMENTS)]
    ids = await checkpoints.documents(scope.redis, documents, "$.thread_id")
    wrong = {k for k, v in zip(documents, ids, strict=True) if not _names_mine(v, threads)}
    return [k for k in named if k not in wrong]


def _names_mine(reply: bytes | None, threads: Threads) -> bool:
    """A `$.thread_id` reply (a JSON list) names one of the subject's threads, or none."""
    named = _first_text(reply)
    return named is None or named in threads.mine


async def find(scope: Scope, subject: subjects.Subject) -> list[str]:
    """Every key of the subject's threads now. Read only."""
    return await keys_of(scope, await threads_of(scope, subject))


async def erase(scope: Scope, subject: subjects.Subject) -> dict[str, int]:
    """Delete every key of the subject's threads; counts: threads, keys, checkpoints."""
    threads = await threads_of(scope, subject)
    keys_gone = checkpoints_gone = 0
    for _ in range(ATTEMPTS):
        found = await keys_of(scope, threads)
        if not found:
            return {"redis_threads": len(threads.mine), "redis_keys": keys_gone,
                    "redis_checkpoints": checkpoints_gone}  # fmt: skip
        gone, archived = await _delete(scope, found)
        keys_gone, checkpoints_gone = keys_gone + gone, checkpoints_gone + archived
    raise exceptions.ArchiverError(
        f"{len(threads.mine)} LangGraph thread(s) of the subject kept being written while being"
        " erased; stop the subject's graph runs, then resume the erasure"
    )


async def _delete(scope: Scope, found: list[str]) -> tuple[int, int]:
    try:
        return await checkpoints.delete_keys(scope.redis, found)
    except redis_exceptions.NoPermissionError:
        raise exceptions.ConfigError(
            "the Redis user may not delete a LangGraph thread's keys: give the erasure"
            " ARCHIVER_ERASURE_REDIS_URL with the archiver-erasure-langgraph user"
            " (ops/redis-acl.conf)"
        ) from None
