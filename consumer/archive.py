"""The one archive routine, shared by events, the deadline index and the sweeper:
claim -> read -> decode -> insert (idempotent) -> commit -> compare-and-delete."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from consumer import checkpoints, codecs, exceptions, keys, logs, metrics, model, store
from consumer.settings import Settings

log = structlog.get_logger("consumer.archive")


@dataclass(frozen=True, slots=True)
class Decoded:
    checkpoints: list[model.Checkpoint]
    dead: list[model.DeadLetter]
    values: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class Policy:
    """Retries and windows of the archive path, from settings."""

    db_attempts: int
    db_delay: float
    retry_after_ms: int
    max_hold_ms: int
    checkpoint_ttl_ms: int
    buffer_ms: int
    sweep_interval_ms: int
    write_timeout: float

    @classmethod
    def of(cls, s: Settings) -> Policy:
        return cls(
            db_attempts=max(1, s.db_retries),
            db_delay=s.db_retry_delay,
            retry_after_ms=int(max(s.db_retry_delay * 2, s.deadline_poll * 5) * 1000),
            max_hold_ms=int(s.max_hold * 1000),
            checkpoint_ttl_ms=int(s.checkpoint_ttl * 1000),
            buffer_ms=int(s.buffer * 1000),
            sweep_interval_ms=int(s.sweep_interval * 1000),
            write_timeout=max(3 * s.db_timeout, 60.0),
        )


class Archiver:
    """Archives batches of checkpoint keys; safe to run in many processes at once."""

    def __init__(
        self,
        redis_side: checkpoints.Checkpoints,
        store_: store.Store,
        codec: codecs.CodecOptions,
        policy: Policy,
    ) -> None:
        self.redis = redis_side
        self.store = store_
        self.codec = codec
        self.policy = policy
        self.token = uuid.uuid4().hex
        self._database_down_until = 0.0  # monotonic; while in the future, hold without trying

    async def archive(
        self, keys: Sequence[str], due_ms: int, received: Mapping[str, float] | None = None
    ) -> model.BatchOutcome:
        """Archive the due keys among `keys`; never raises for one bad checkpoint.
        `received`: when each key's trigger arrived (monotonic), else now: what `ms` counts from."""
        started = _Started(received or {}, time.monotonic())
        unique = list(dict.fromkeys(keys))
        claims = await self.redis.claim(unique, self.token, due_ms)
        started.lap("claim_ms")
        outcome = model.BatchOutcome(requested=len(unique))
        await self._note_unclaimed(claims, outcome)
        claimed = [c for c in claims if c.status is model.ClaimStatus.CLAIMED]
        if claimed:
            await self._archive_claimed(claimed, outcome, started)
            _log_batch(outcome, started)
        metrics.BATCH_SIZE.observe(len(claimed))
        return outcome

    async def _note_unclaimed(
        self, claims: Sequence[model.Claim], outcome: model.BatchOutcome
    ) -> None:
        rearmed, gone = {}, []
        now = checkpoints.now_ms()
        for c in claims:
            if c.status is model.ClaimStatus.REARMED:
                rearmed[c.key] = now + c.pttl_ms
            elif c.status is model.ClaimStatus.GONE:
                gone.append(c.key)
            elif c.status in (model.ClaimStatus.ERROR, model.ClaimStatus.WRONGTYPE):
                outcome.errors += 1
                metrics.ERRORS.labels(stage="claim").inc()
                log.error("checkpoint.unreadable", key=c.key, error=c.error)
            elif c.status is model.ClaimStatus.BUSY:
                outcome.skipped += 1
        outcome.rearmed += len(rearmed)
        outcome.skipped += len(gone)
        await self.redis.schedule(rearmed)
        await self.redis.unschedule(gone)

    async def _archive_claimed(
        self, claimed: Sequence[model.Claim], outcome: model.BatchOutcome, started: _Started
    ) -> None:
        decoded = self._decode(claimed)
        started.lap("decode_ms")
        if time.monotonic() < self._database_down_until:
            # PostgreSQL just failed: hold at once instead of making every batch wait for
            # its own timeout while more checkpoints come due behind it.
            await self._hold(decoded.values, exceptions.StoreUnavailableError(), outcome)
            return
        try:
            counts, decoded = await self._write(decoded)
        except Exception as exc:  # the database failed us: keep everything in Redis
            if store.is_transient(exc):
                self._database_down_until = time.monotonic() + self.policy.retry_after_ms / 1000
            if store.is_read_only(exc):  # a failover: the primary may be elsewhere now
                await self.store.reconnect()
            await self._hold(decoded.values, exc, outcome)
            return
        self._database_down_until = 0.0
        started.lap("write_ms")
        await self._finish(decoded, counts, outcome, started)

    def _decode(self, claimed: Sequence[model.Claim]) -> Decoded:
        good, dead, values = [], [], {}
        for c in claimed:
            raw = c.value or b""
            values[c.key] = raw
            try:
                good.append(self._decode_one(c.key, raw))
            except Exception as exc:  # anything unreadable is dead-lettered with its bytes
                dead.append(model.DeadLetter(c.key, raw, str(exc) or type(exc).__name__))
        return Decoded(good, dead, values)

    def _decode_one(self, key: str, raw: bytes) -> model.Checkpoint:
        info = self.redis.layout.parse(key)
        if info is None:
            raise exceptions.DecodeError("key does not match ARCHIVER_KEY_PATTERN")
        return codecs.decode(
            key, raw, key_conversation_id=keys.for_storage(info.conversation_id),
            key_time=info.written_at,
            options=self.codec,
        )  # fmt: skip

    async def _write(self, decoded: Decoded) -> tuple[dict[str, int], Decoded]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.db_attempts),
            wait=wait_fixed(self.policy.db_delay),
            retry=retry_if_exception(store.is_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                counts, refused = await self._write_isolating(
                    decoded.checkpoints, decoded.dead, decoded.values
                )
        gone = {d.source_key for d in refused}
        kept = [c for c in decoded.checkpoints if c.source_key not in gone]
        return counts, Decoded(kept, decoded.dead + refused, decoded.values)

    async def _write_isolating(
        self, batch: list[model.Checkpoint], dead: list[model.DeadLetter], raw: dict[str, bytes]
    ) -> tuple[dict[str, int], list[model.DeadLetter]]:
        """Write the batch; if PostgreSQL refuses the data, split it so one bad checkpoint
        fails alone, and dead-letter that one with its raw bytes."""
        try:
            async with asyncio.timeout(self.policy.write_timeout):  # a hung server, too
                return await self.store.write(batch, dead), []
        except Exception as exc:
            if not store.is_data_error(exc) or not batch:
                raise  # the database failed, not the data: the caller holds the whole batch
            if len(batch) == 1:
                key = batch[0].source_key
                refused = model.DeadLetter(key, raw[key], f"refused by PostgreSQL: {exc}"[:1000])
                await self.store.write([], [*dead, refused])
                return {}, [refused]
        half = len(batch) // 2
        first, refused_first = await self._write_isolating(batch[:half], dead, raw)
        second, refused_second = await self._write_isolating(batch[half:], [], raw)
        return first | second, refused_first + refused_second

    async def _finish(
        self,
        decoded: Decoded,
        counts: dict[str, int],
        outcome: model.BatchOutcome,
        started: _Started,
    ) -> None:
        done = [(k, checkpoints.digest(v)) for k, v in decoded.values.items()]
        finished = await self.redis.finish(done, self.token)
        changed = [f.key for f in finished if f.result == 0]
        if changed:
            await self.redis.arm(changed)
        started.lap("finish_ms")
        self._count(decoded, counts, changed, outcome, started)

    def _count(
        self,
        decoded: Decoded,
        counts: dict[str, int],
        changed: list[str],
        outcome: model.BatchOutcome,
        started: _Started,
    ) -> None:
        now = time.monotonic()
        lines = []
        for c in decoded.checkpoints:
            elapsed = now - started.of(c.source_key)
            metrics.LATENCY.observe(elapsed)
            lines.append({
                "key": c.source_key, "conversation_id": c.conversation_id,
                "tenant_id": c.tenant_id, "messages": counts.get(c.source_key, 0),
                "ms": round(elapsed * 1000, 1),
            })  # fmt: skip
        logs.info_lines(log, "checkpoint.archived", lines)
        archived = len(decoded.checkpoints)
        messages = sum(counts.get(c.source_key, 0) for c in decoded.checkpoints)
        outcome.archived += archived
        outcome.messages += messages
        metrics.ARCHIVED.inc(archived)
        metrics.MESSAGES.inc(messages)
        for d in decoded.dead:
            outcome.dead_letters += 1
            metrics.DEAD_LETTERS.inc()
            log.warning(
                "checkpoint.dead_lettered", key=d.source_key, error=d.error, bytes=len(d.raw)
            )
        for key in changed:
            outcome.changed += 1
            log.info("checkpoint.changed", key=key, detail="rewritten while archiving; kept")

    async def _hold(
        self, values: dict[str, bytes], exc: BaseException, outcome: model.BatchOutcome
    ) -> None:
        """PostgreSQL failed: keep the checkpoints alive (bounded by MAX_HOLD) and retry later."""
        now = checkpoints.now_ms()
        held = {k: (checkpoints.digest(v), self._hold_until(k, now)) for k, v in values.items()}
        backoff_ms = max(1, self.policy.retry_after_ms * 4 // 5)
        await self.redis.hold(held, self.token, backoff_ms)
        for key, (_, until) in held.items():
            if until <= now + self.policy.retry_after_ms:
                metrics.HOLD_EXHAUSTED.inc()
                log.error("checkpoint.hold_exhausted", key=key, detail="ARCHIVER_MAX_HOLD reached")
        await self.redis.schedule({k: now + self.policy.retry_after_ms for k in values})
        outcome.errors += len(values)
        outcome.held += len(values)
        metrics.ERRORS.labels(stage="database").inc(len(values))
        log.error(
            "batch.failed", checkpoints=len(values), error=_describe(exc), action="held in Redis"
        )

    def _hold_until(self, key: str, now: int) -> int:
        """Long enough for the next sweep to find it (cron-only setups), never past MAX_HOLD."""
        info = self.redis.layout.parse(key)
        p = self.policy
        written = int(info.written_ts * 1000) if info else now
        wanted = now + p.buffer_ms + p.sweep_interval_ms
        return min(wanted, written + p.checkpoint_ttl_ms + p.max_hold_ms)


@dataclass(slots=True)
class _Started:
    """When each key's trigger arrived (monotonic; keys without one: when the batch began),
    and how long each step of the batch took (`lap`), for the batch's log line."""

    received: Mapping[str, float]
    batch: float
    laps: dict[str, float] = field(default_factory=dict)
    last: float = 0.0

    def of(self, key: str) -> float:
        return self.received.get(key, self.batch)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round((now - (self.last or self.batch)) * 1000, 1)
        self.last = now

    @property
    def queued_ms(self) -> float:
        oldest = min(self.received.values(), default=self.batch)
        return round(max(0.0, self.batch - oldest) * 1000, 1)


def _log_batch(outcome: model.BatchOutcome, started: _Started) -> None:
    """One line per batch that claimed something: its size and where its time went."""
    log.info(
        "batch.archived", checkpoints=outcome.archived, messages=outcome.messages,
        dead_letters=outcome.dead_letters, held=outcome.held, queued_ms=started.queued_ms,
        **started.laps,
    )  # fmt: skip


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
