"""The PostgreSQL side: one transaction per batch, COPY into staging, idempotent insert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from asyncpg.exceptions._base import DataError as ClientDataError

from consumer import checkpoints, fences, keys, migrate, model, queries

_STAGING_COLUMNS = (
    "ordinal", "tenant_id", "customer_id", "user_id", "conversation_id", "timestamp_us", "keyed_by_time",
    "message_role", "message_content", "metadata", "message_key", "source_key",
)  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# SQLSTATE classes that one checkpoint's data can cause: data exception (22: a value out of
# range, an untranslatable character...), integrity constraint violation (23) and program limit
# exceeded (54: an index row or a jsonb value too large). Only these may dead-letter a checkpoint,
# and only once bisecting its batch has shown that it fails alone.
DATA_CLASSES = frozenset({"22", "23", "54"})

# Failures outside PostgreSQL's replies: a lost or refused connection, a timeout, asyncpg's state.
CONNECTION_FAILURES = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL refused the data itself (or asyncpg could not encode one of its values)."""
    if isinstance(exc, ClientDataError):  # client side: "invalid input for query argument"
        return True
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(state, str) and state[:2] in DATA_CLASSES


def is_transient(exc: BaseException) -> bool:
    """A failure of the database or of its surroundings, not of the data: hold the checkpoints
    and retry, never dead-letter. Decided by SQLSTATE class, not by exception type: every
    PostgreSQL error but the data classes (53 resources and disk full, 55 lock_not_available,
    57 lock or statement timeouts and shutdowns, 40 rollbacks, 25006 read-only, 42 a schema or
    privilege the deployment got wrong, 58/XX system errors...), lost connections, timeouts."""
    if isinstance(exc, asyncpg.PostgresError):
        return not is_data_error(exc)
    return isinstance(exc, CONNECTION_FAILURES) and not is_data_error(exc)


def is_timeout(exc: BaseException) -> bool:
    """The batch ran out of time: our own timeout, a statement_timeout or a lock_timeout."""
    return isinstance(
        exc, TimeoutError | asyncpg.QueryCanceledError | asyncpg.LockNotAvailableError
    )


def is_read_only(exc: BaseException) -> bool:
    """The server refuses writes (a standby, or a primary being demoted): reconnect to find the
    new primary behind the same address."""
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == "25006"


@dataclass(frozen=True, slots=True)
class Run:
    """One row of archive_runs."""

    kind: str
    host: str
    started_at: datetime
    finished_at: datetime
    status: str
    found: int
    archived: int
    messages: int
    dead_letters: int
    errors: int
    details: dict[str, Any]


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(queries.get("create_staging"))


async def connect(
    dsn: str, *, command_timeout: float, min_size: int = 0, max_size: int = 4
) -> asyncpg.Pool:
    """A pool that opens connections on demand: creating it never waits for PostgreSQL."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=command_timeout,
        init=_init_connection,
    )
    return pool


class Store:
    """Writes batches of decoded checkpoints and dead letters; reads runs."""

    def __init__(self, pool: asyncpg.Pool, erasure_key: bytes | None = None) -> None:
        self.pool = pool
        self.erasure_key = erasure_key  # ARCHIVER_ERASURE_KEY: the fence's keyed hashes
        self._months: set[tuple[int, int]] = set()
        self.schema_verified = False

    async def ensure_schema(self) -> None:
        """Refuse to write to a database with pending migrations (checked once it answers)."""
        if self.schema_verified:
            return
        async with self.pool.acquire() as conn:
            await migrate.ensure_current(conn)
        self.schema_verified = True

    async def reconnect(self) -> None:
        """Close every pooled connection (idle ones now, busy ones once released): after a
        read-only refusal the next connections find whichever server is primary by then."""
        await self.pool.expire_connections()

    async def write(
        self,
        batch: Sequence[model.Checkpoint],
        dead: Sequence[model.DeadLetter],
        resolved: Sequence[int] = (),
    ) -> dict[str, int]:
        """Commit a batch: new messages per source key (0 for duplicates only). `resolved`:
        dead letters (ids) that this batch archives, marked resolved in the same transaction."""
        await self.ensure_schema()
        everything = _conversation_columns(batch)
        await self._ensure_months(_partition_moments(batch, everything[4], everything[5]))
        async with self.pool.acquire() as conn, conn.transaction():
            # First: the erasure fence (its lock orders this batch against erasures' tombstones)
            fenced = await fences.apply(conn, batch, self.erasure_key)
            if resolved:
                await conn.execute(queries.get("dead_letters_resolve"), list(resolved))
            if dead:
                await conn.execute(queries.get("insert_dead_letters"), *_dead_columns(dead))
            if not fenced.kept:
                return {c.source_key: 0 for c in batch}
            kept = fenced.kept
            fenced_off = fenced.erased or len(kept) < len(batch)
            conversations = _conversation_columns(kept) if fenced_off else everything
            ids = await conn.fetch(queries.get("lock_conversations"), *conversations)
            late = [r for r in ids if r["identified_now"]]
            if late:
                pairs = [[r["tenant_id"] for r in late], [r["conversation_id"] for r in late]]
                await conn.execute(queries.get("backfill_customer"), *pairs)
            known = {
                (r["tenant_id"], r["conversation_id"]): (r["customer_id"], r["user_id"])
                for r in ids
            }
            await conn.copy_records_to_table(
                "archiver_staging", records=_staging_rows(kept, known), columns=_STAGING_COLUMNS
            )
            rows = await conn.fetch(queries.get("insert_messages"))
        stored = {r["source_key"]: r["n"] for r in rows}
        return {c.source_key: stored.get(keys.for_storage(c.source_key), 0) for c in batch}

    async def warm(self, connections: int, now: datetime | None = None) -> None:
        """Be ready for the first burst: this month's and next month's partitions exist, and
        `connections` pooled connections have the write path's statements prepared (by
        writing an empty batch). Measured: the first batches of a burst otherwise took 3x as
        long, opening connections, planning statements and creating the partition at once."""
        moment = now or datetime.now(UTC)
        await self._ensure_months([moment, next_month(moment)])
        await asyncio.gather(*(self._prime() for _ in range(connections)))

    async def _prime(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetch(queries.get("lock_conversations"), *([[]] * 6))
            await conn.copy_records_to_table(
                "archiver_staging", records=[], columns=_STAGING_COLUMNS
            )
            await conn.fetch(queries.get("insert_messages"))

    async def _ensure_months(self, moments: Iterable[datetime]) -> None:
        needed: dict[tuple[int, int], datetime] = {}
        for ts in moments:
            needed.setdefault((ts.year, ts.month), ts)
        missing = [ts for month, ts in needed.items() if month not in self._months]
        if not missing:
            return
        async with self.pool.acquire() as conn:
            for ts in missing:
                await conn.execute(queries.get("ensure_partition"), ts)
        self._months.update((ts.year, ts.month) for ts in missing)

    async def record_run(self, run: Run) -> int:
        async with self.pool.acquire() as conn:
            run_id: int = await conn.fetchval(
                queries.get("record_run"),
                run.kind, run.host, run.started_at, run.finished_at, run.status, run.found,
                run.archived, run.messages, run.dead_letters, run.errors,
                orjson.dumps(run.details).decode(),
            )  # fmt: skip
        return run_id

    async def recent_runs(self, limit: int) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(queries.get("recent_runs"), limit)
        return [dict(r) | {"details": orjson.loads(r["details"])} for r in rows]

    async def open_dead_letters(self) -> int:
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval(queries.get("open_dead_letters"))
        return count


def next_month(moment: datetime) -> datetime:
    """The first instant of the month after `moment`'s (in its own time zone)."""
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def _partition_moments(
    batch: Sequence[model.Checkpoint],
    starts: Sequence[datetime | None],
    ends: Sequence[datetime | None],
) -> list[datetime]:
    """A moment in each month the batch's messages fall in. Usually each conversation's first
    and last messages share a month, and its first tells; otherwise every message is looked at
    (a conversation may span years: only the months that hold messages get a partition)."""
    pairs = zip(starts, ends, strict=True)
    if all(a is None or b is None or _month(a) == _month(b) for a, b in pairs):
        return [first for first in starts if first is not None]
    return [m.timestamp for c in batch for m in c.messages]


def _month(moment: datetime) -> tuple[int, int]:
    return moment.year, moment.month


def _conversation_columns(batch: Sequence[model.Checkpoint]) -> list[list[Any]]:
    """One entry per conversation, in key order: tenant, conversation, customer, user (later
    checkpoints fill in ids earlier ones lacked), first and last message times."""
    merged: dict[tuple[str, str], _Conversation] = {}
    for c in batch:
        entry = merged.setdefault((c.tenant_id, c.conversation_id), _Conversation())
        entry.add(c)
    ordered = sorted(merged.items())
    columns: list[list[Any]] = [[t for (t, _), _ in ordered], [conv for (_, conv), _ in ordered]]
    for name in ("customer_id", "user_id", "started_at", "ended_at"):
        columns.append([getattr(entry, name) for _, entry in ordered])
    return columns


@dataclass(slots=True)
class _Conversation:
    """What a batch says of one conversation (mutable while the batch is folded in)."""

    customer_id: str | None = None
    user_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def add(self, c: model.Checkpoint) -> None:
        self.customer_id = c.customer_id or self.customer_id
        self.user_id = c.user_id or self.user_id
        if not c.messages:
            return
        stamps = [m.timestamp for m in c.messages]
        first, last = min(stamps), max(stamps)
        self.started_at = first if self.started_at is None else min(first, self.started_at)
        self.ended_at = last if self.ended_at is None else max(last, self.ended_at)


def _staging_rows(
    batch: Sequence[model.Checkpoint], known: dict[tuple[str, str], tuple[str | None, str | None]]
) -> list[tuple[Any, ...]]:
    """Rows for COPY; customer and user as the conversation row holds them after the upsert."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    micros: dict[datetime, int] = {}  # checkpoints of a conversation repeat their messages' times
    ordinal = 0
    for c in batch:
        tenant, conversation = c.tenant_id, c.conversation_id
        customer, user = known[(tenant, conversation)]
        source = keys.for_storage(c.source_key)
        for key, role, content, timestamp, metadata in c.messages:  # unpacked: 25% faster
            us = micros.get(timestamp)
            if us is None:
                us = micros[timestamp] = (timestamp - _EPOCH) // _MICROSECOND
            by_time = key.startswith("h:") and metadata.get("timestamp_source") != "checkpoint"
            ordinal += 1
            append((
                ordinal, tenant, customer, user, conversation, us, by_time, role, content,
                orjson.dumps(metadata).decode() if metadata else "{}", key, source,
            ))  # fmt: skip
    return rows


def _dead_columns(dead: Sequence[model.DeadLetter]) -> list[list[Any]]:
    """Columns of insert_dead_letters; a dead letter is identified by its key and the SHA-1
    of its whole value (what compare-and-delete compares), truncated or not."""
    unique = {
        (keys.for_storage(d.source_key), d.sha1 or checkpoints.digest(d.raw)): d for d in dead
    }
    return [
        [key for key, _ in unique],
        [sha for _, sha in unique],
        [d.raw for d in unique.values()],
        [d.error for d in unique.values()],
        [len(d.raw) if d.size is None else d.size for d in unique.values()],
        [d.truncated for d in unique.values()],
    ]
