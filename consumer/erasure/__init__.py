"""Erasure: the right to be forgotten for one customer, user or conversation of a tenant, in
Redis, PostgreSQL (messages, conversation rows, dead letters) and the cold tier, with an audit
trail that names no one (the subject's keyed hash, consumer/fences.py) and a fence that keeps
the archive path from bringing it back.

The library calls (the CLI's `archiver erase` and the HTTP API use these):

    request(conn, key, tenant, kind, subject, reason="") -> Erasure
        The tombstone, in one transaction under the erasure lock: an `erasures` row
        (requested_at by PostgreSQL's clock), the fences of the subject and of the conversations
        it has, and its working state. From its commit on, the archive path refuses every
        message of the subject stamped at or before requested_at. `key`: ARCHIVER_ERASURE_KEY
        as bytes (Settings.erasure_secret); kind: "customer", "user" or "conversation".
    status(conn, erasure_id) -> Erasure             NotFoundError if there is none
    listing(conn, limit=50, before=None) -> list[Erasure]   newest first, before an id
    async with Surroundings.open(settings) as where:
        await run(where, erasure_id) -> Erasure      the remaining steps, then completed
        await verify(where, erasure_id, subject=None) -> Verification
        await preview(where, tenant, kind, subject) -> dict[str, int]  (what would go)
    resume_unfinished(ctx: jobs.Context) -> counts   the periodic job `erasure`

The steps, in order, each idempotent and recorded when done (`erasures.step`), so that a run
killed anywhere resumes where it stopped: redis (consumer/erasure/redis_side.py, through the
configured source: langgraph_side.py for ARCHIVER_SOURCE=langgraph-redis, connected to
ARCHIVER_ERASURE_REDIS_URL when it is set), postgres
(postgres_side.py), cold (cold.py), then completed with the counts per place. The subject id
itself is kept in `erasure_work` while the erasure is unfinished (a resumed run must find its
data) and deleted in the transaction that completes it. Logs and metrics carry only the id of
the erasure and the keyed hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from consumer import (
    checkpoints,
    codecs,
    connection,
    exceptions,
    fences,
    jobs,
    keys,
    queries,
    sources,
    store,
    terminal,
)
from consumer.erasure import langgraph_side, postgres_side, redis_side, subjects
from consumer.settings import Settings
from consumer.sources import langgraph_redis

log = structlog.get_logger("consumer.erasure")

STEPS = ("redis", "postgres", "cold")
NEXT = {"redis": "postgres", "postgres": "cold", "cold": "done"}
Hook = Callable[[str], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Erasure:
    """One row of the audit trail, and (while unfinished) the subject it works on."""

    id: int
    tenant_id: str
    kind: str
    subject_hash: str
    requested_at: datetime
    reason: str
    status: str
    step: str
    counts: dict[str, Any]
    error: str | None
    updated_at: datetime
    completed_at: datetime | None
    subject: subjects.Subject | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, row: asyncpg.Record) -> Erasure:
        counts = row["counts"]
        subject = None
        if row["subject"] is not None:
            subject = subjects.Subject(
                row["tenant_id"], row["kind"], row["subject"], row["requested_at"],
                frozenset(row["conversations"] or ()),
            )  # fmt: skip
        return cls(
            row["id"], row["tenant_id"], row["kind"], row["subject_hash"], row["requested_at"],
            row["reason"], row["status"], row["step"],
            orjson.loads(counts) if isinstance(counts, str) else dict(counts), row["error"],
            row["updated_at"], row["completed_at"], subject,
        )  # fmt: skip

    def as_item(self) -> dict[str, Any]:
        """The erasure as `--json` and the API show it: never the subject in clear."""
        return {
            "id": self.id, "tenant_id": self.tenant_id, "kind": self.kind,
            "subject_hash": self.subject_hash, "requested_at": self.requested_at,
            "reason": self.reason, "status": self.status, "step": self.step,
            "counts": self.counts, "error": self.error, "updated_at": self.updated_at,
            "completed_at": self.completed_at,
        }  # fmt: skip


COLUMNS = [
    terminal.column("id", "id", "number"),
    terminal.column("tenant", "tenant_id", "id"),
    terminal.column("kind", "kind"),
    terminal.Column("subject (keyed hash)", lambda row: row["subject_hash"][:16], "id", drop=2),
    terminal.column("requested (UTC)", "requested_at", "time"),
    terminal.column("status", "status"),
    terminal.column("next step", "step", drop=1),
    terminal.column("completed", "completed_at", "time", drop=3),
]


def _need_key(key: bytes | None) -> bytes:
    if key is None:
        raise exceptions.ConfigError(
            "ARCHIVER_ERASURE_KEY is not set: erasure needs the secret of its keyed hashes"
            " (the same for every archiver and every erasure; ops/OPERATIONS.md, Erasure)"
        )
    return key


async def request(
    conn: Any, key: bytes | None, tenant: str, kind: str, subject: str, reason: str = ""
) -> Erasure:
    """Record the tombstone and the fences (see the module's docstring)."""
    secret = _need_key(key)
    subjects.Subject(tenant, kind, subject, datetime.min)  # validates
    digest = fences.subject_hash(secret, tenant, kind, subject)
    async with conn.transaction():
        await conn.execute(queries.get("erasure_lock"))
        row = await conn.fetchrow(queries.get("erasure_insert"), tenant, kind, digest, reason)
        found = await postgres_side.conversations_of(conn, tenant, kind, subject)
        owned = sorted(found - {subject} if kind == "conversation" else found)
        hashes = [digest] + [fences.subject_hash(secret, tenant, "conversation", c) for c in owned]
        kinds = [kind] + ["conversation"] * len(owned)
        await conn.execute(
            queries.get("erasure_fences_insert"), tenant, kinds, hashes, row["id"],
            row["requested_at"],
        )  # fmt: skip
        await conn.execute(queries.get("erasure_work_insert"), row["id"], subject, owned)
    log.info("erasure.requested", erasure=row["id"], tenant=tenant, kind=kind, subject=digest,
             conversations=len(owned))  # fmt: skip
    return await status(conn, row["id"])


async def status(conn: Any, erasure_id: int) -> Erasure:
    row = await conn.fetchrow(queries.get("erasure_get"), erasure_id)
    if row is None:
        raise exceptions.NotFoundError(f"no erasure {erasure_id} (see `archiver erasures`)")
    return Erasure.of(row)


async def listing(conn: Any, limit: int = 50, before: int | None = None) -> list[Erasure]:
    return [Erasure.of(r) for r in await conn.fetch(queries.get("erasure_list"), limit, before)]


@dataclasses.dataclass(frozen=True, slots=True)
class Surroundings:
    """What the steps reach: PostgreSQL, Redis (through consumer/checkpoints.py), the decoder,
    the settings and the key."""

    pool: asyncpg.Pool
    scope: redis_side.Scope
    settings: Settings

    @property
    def key(self) -> bytes:
        return _need_key(self.settings.erasure_secret)

    @property
    def reader(self) -> subjects.Reader:
        return self.scope.reader

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, s: Settings, pool: asyncpg.Pool | None = None
    ) -> AsyncIterator[Surroundings]:
        """Connect to both servers (or use `pool`); closed on the way out."""
        client = connection.from_url(
            s.erasure_redis, socket_timeout=s.redis_timeout, socket_connect_timeout=s.redis_timeout,
            encoding_errors=checkpoints.ENCODING_ERRORS,
        )  # fmt: skip
        own = pool is None
        used = pool or await store.connect(s.database_url, command_timeout=s.job_timeout)
        try:
            yield cls(used, _scope(s, client), s)
        finally:
            await client.aclose()
            if own:
                await used.close()


def codec_options(s: Settings) -> codecs.CodecOptions:
    """As the archive path decodes (service.codec_options, which this module cannot import:
    the service imports the periodic jobs, erasure among them)."""
    return codecs.CodecOptions(
        timezone=s.zone, allow_pickle=s.allow_pickle, default_tenant=s.default_tenant,
        max_payload_bytes=s.max_payload,
    )  # fmt: skip


def _scope(s: Settings, client: Any) -> redis_side.Scope:
    """The Redis step through the configured source (ARCHIVER_SOURCE): seed-json values are
    searched by erasure_read.lua and compare-and-deleted by erase.lua; LangGraph threads by
    consumer/erasure/langgraph_side.py."""
    layout = keys.layout_from(s.key_pattern, s.shadow_prefix)
    timing = checkpoints.Timing(buffer_ms=0, archive_after_ms=0, lease_ms=0, hold_ms=0)
    source = sources.of(s, layout, codec_options(s))
    redis = checkpoints.Checkpoints(client, layout, timing, source)
    langgraph = None
    if isinstance(source, langgraph_redis.LangGraphRedis):
        langgraph = langgraph_side.Scope(redis, source, s.scan_count, s.batch_bytes)
    return redis_side.Scope(
        redis=redis, reader=subjects.Reader(layout, codec_options(s)),
        scan_count=s.scan_count, group_bytes=s.batch_bytes, max_payload=s.max_payload,
        langgraph=langgraph,
    )  # fmt: skip


async def _nothing(step: str) -> None:
    return None


async def run(where: Surroundings, erasure_id: int, between: Hook = _nothing) -> Erasure:
    """Run the erasure's remaining steps, each recorded when done, then complete it.
    `between` is awaited after each step is recorded (tests inject crashes there)."""
    async with where.pool.acquire() as conn:
        e = await status(conn, erasure_id)
    while e.status != "completed":
        if e.subject is None:  # completed by another run meanwhile
            raise exceptions.ArchiverError(f"erasure {e.id} lost its working state")
        if e.step == "done":
            async with where.pool.acquire() as conn:
                await conn.execute(queries.get("erasure_complete"), e.id)
        else:
            await _step(where, e)
            await between(e.step)
        async with where.pool.acquire() as conn:
            e = await status(conn, erasure_id)
    log.info("erasure.completed", erasure=e.id, subject=e.subject_hash, **_flat(e.counts))
    return e


async def _step(where: Surroundings, e: Erasure) -> None:
    assert e.subject is not None
    try:
        counts = await _STEPS[e.step](where, e, e.subject)
    except Exception as exc:
        error = _safe_error(exc)
        async with where.pool.acquire() as conn:
            await conn.execute(queries.get("erasure_failed"), e.id, error)
        log.error("erasure.step_failed", erasure=e.id, subject=e.subject_hash, step=e.step,
                  error=error)  # fmt: skip
        raise
    async with where.pool.acquire() as conn:
        await conn.execute(
            queries.get("erasure_step_done"), e.id, orjson.dumps(counts).decode(), e.step,
            NEXT[e.step],
        )  # fmt: skip
    log.info("erasure.step", erasure=e.id, subject=e.subject_hash, step=e.step, **_flat(counts))


def _safe_error(exc: BaseException) -> str:
    """A failure as the audit trail keeps it: our own messages name no subject; others are
    reduced to their type (a driver's message might quote a value)."""
    if isinstance(exc, exceptions.ArchiverError):
        return f"{type(exc).__name__}: {exc}"[:500]
    return type(exc).__name__


def _flat(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if isinstance(v, int | str)}


async def _redis_step(where: Surroundings, e: Erasure, subject: subjects.Subject) -> dict[str, Any]:
    return await redis_side.erase(where.scope, subject)


async def _postgres_step(
    where: Surroundings, e: Erasure, subject: subjects.Subject
) -> dict[str, Any]:
    batch = where.settings.erasure_batch
    async with where.pool.acquire() as conn:
        found = await postgres_side.conversations_of(conn, e.tenant_id, e.kind, subject.id)
        new = found - subject.conversation_ids
        if new:  # conversations archived since the request: fenced off as well
            async with conn.transaction():
                await postgres_side.fence_conversations(conn, where.key, e.id, subject, new)
                await conn.execute(
                    queries.get("erasure_work_conversations"), e.id,
                    sorted(subject.conversations | new),
                )  # fmt: skip
            subject = dataclasses.replace(subject, conversations=subject.conversations | new)
        rows = await postgres_side.erase_rows(conn, e.id, subject, batch)
        settled = await postgres_side.settle(conn, subject)
        letters = await postgres_side.dead_letters(conn, subject, where.reader)
        dead = await postgres_side.erase_dead_letters(conn, e.id, letters)
    return {"postgres_messages": rows, **settled, "dead_letters": dead}


# As consumer/erasure/cold.py says it when no cold tier is configured; without one, pyarrow and
# DuckDB (about 70 MB of RSS) are not loaded at all.
NO_COLD = {"cold": "no cold tier configured"}


async def _cold_left(s: Settings, target: subjects.Subject) -> dict[str, Any]:
    if s.cold_url is None:
        return dict(NO_COLD)
    from consumer.erasure import cold

    return await cold.left(s, target)


async def _cold_step(where: Surroundings, e: Erasure, subject: subjects.Subject) -> dict[str, Any]:
    if where.settings.cold_url is None:
        return dict(NO_COLD)
    from consumer.erasure import cold  # pyarrow and DuckDB: loaded by the step that needs them

    async with where.pool.acquire() as conn:
        return await cold.erase(conn, where.settings, subject)


_STEPS: dict[str, Callable[[Surroundings, Erasure, subjects.Subject], Awaitable[dict[str, Any]]]]
_STEPS = {"redis": _redis_step, "postgres": _postgres_step, "cold": _cold_step}


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    """What `--verify` found of the subject, per place (0: nothing)."""

    erasure: Erasure
    places: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.erasure.status == "completed" and not any(
            isinstance(n, int) and n > 0 for n in self.places.values()
        )

    def as_item(self) -> dict[str, Any]:
        return {"erasure": self.erasure.as_item(), "ok": self.ok, "left": self.places}


async def verify(where: Surroundings, erasure_id: int, subject: str | None = None) -> Verification:
    """Search every place for what is left of the erasure's subject from before requested_at.
    A completed erasure keeps only the keyed hash: give its subject id again (checked against
    the hash)."""
    async with where.pool.acquire() as conn:
        e = await status(conn, erasure_id)
    target = e.subject or _claimed(where, e, subject)
    places: dict[str, Any] = await redis_side.left(where.scope, target)
    async with where.pool.acquire() as conn:
        places |= await postgres_side.left(conn, target, where.reader)
    places |= await _cold_left(where.settings, target)
    log.info("erasure.verified", erasure=e.id, subject=e.subject_hash, **_flat(places))
    return Verification(e, places)


def _claimed(where: Surroundings, e: Erasure, subject: str | None) -> subjects.Subject:
    if subject is None:
        raise exceptions.UsageError(
            f"erasure {e.id} is completed and keeps only the keyed hash of its subject: give the"
            f" subject again (--{e.kind} ID) to verify it"
        )
    if fences.subject_hash(where.key, e.tenant_id, e.kind, subject) != e.subject_hash:
        raise exceptions.UsageError(
            f"that is not the subject of erasure {e.id} (tenant {e.tenant_id}, {e.kind}): its"
            " keyed hash differs"
        )
    return subjects.Subject(e.tenant_id, e.kind, subject, e.requested_at)


async def preview(where: Surroundings, tenant: str, kind: str, subject: str) -> dict[str, Any]:
    """What an erasure of the subject requested now would delete, per place. Writes nothing."""
    async with where.pool.acquire() as conn:
        now: datetime = await conn.fetchval(queries.get("database_now"))
        owned = await postgres_side.conversations_of(conn, tenant, kind, subject)
        target = subjects.Subject(tenant, kind, subject, now, frozenset(owned))
        places = await postgres_side.left(conn, target, where.reader)
    places |= await redis_side.left(where.scope, target)
    return places | await _cold_left(where.settings, target)


async def resume_unfinished(ctx: jobs.Context) -> jobs.Counts:
    """The periodic job `erasure`: run every unfinished erasure to completion."""
    async with ctx.pool.acquire() as conn:
        unfinished = [r["id"] for r in await conn.fetch(queries.get("erasure_unfinished"))]
    done = 0
    async with Surroundings.open(ctx.settings, ctx.pool) as where:
        for erasure_id in unfinished:
            await run(where, erasure_id)
            done += 1
            ctx.counts["completed"] = done
    return {"unfinished": len(unfinished), "completed": done}
