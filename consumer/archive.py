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

from consumer import checkpoints, codecs, exceptions, logs, metrics, model, store
from consumer.settings import Settings

log = structlog.get_logger("consumer.archive")


# A batch whose values total more than this is decoded in a thread: at about 40 ms of CPU per
# MB of JSON, decoding it on the event loop would stall the listener, the deadline poller and
# every other batch. Measured with a 33 MB checkpoint: 1.3-1.7 s of stall inline; in a thread
# the loop's longest stall was 160-175 ms (orjson's parse holds the GIL). A process pool would
# have to pickle the decoded messages back, which costs about what decoding does. Pickles,
# parsed in pure Python under opcode limits (codecs), always go to the thread.
DECODE_INLINE_BYTES = 1024 * 1024
OVERSIZED_HEAD_BYTES = 64 * 1024  # what an oversized value's dead letter keeps of it
WRITE_BYTES_PER_S = 1024 * 1024  # a batch's write timeout grows by 1 s per MB of its values
SUSPECT_FOR_S = 600.0  # a checkpoint whose batch timed out is written alone this long
MAX_SUSPECTS = 10_000


@dataclass(frozen=True, slots=True)
class Decoded:
    checkpoints: list[model.Checkpoint]
    dead: list[model.DeadLetter]
    values: dict[str, bytes]  # as claimed: what finish/hold compare (SHA-1)
    not_ready: tuple[str, ...] = ()  # still being written: released, retried shortly

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.values.values())

    def split(self, keys_: set[str]) -> tuple[Decoded, list[Decoded]]:
        """This batch less the checkpoints `keys_` names, and each of those alone."""
        rest = Decoded(
            [c for c in self.checkpoints if c.source_key not in keys_],
            self.dead,
            {k: v for k, v in self.values.items() if k not in keys_},
        )
        alone = [
            Decoded([c], [], {c.source_key: self.values[c.source_key]})
            for c in self.checkpoints
            if c.source_key in keys_
        ]
        return rest, alone


@dataclass(frozen=True, slots=True)
class Policy:
    """Retries and windows of the archive path, from settings."""

    db_attempts: int
    db_delay: float
    retry_after_ms: int
    write_timeout: float
    max_payload: int

    @classmethod
    def of(cls, s: Settings) -> Policy:
        return cls(
            db_attempts=max(1, s.db_retries),
            db_delay=s.db_retry_delay,
            retry_after_ms=int(max(s.db_retry_delay * 2, s.deadline_poll * 5) * 1000),
            write_timeout=max(3 * s.db_timeout, 60.0),
            max_payload=s.max_payload,
        )

    def timeout_for(self, size: int) -> float:
        """A batch's write timeout: large values take longer to send and to insert."""
        return self.write_timeout + size / WRITE_BYTES_PER_S


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
        self.in_flight: set[str] = set()  # claimed by a batch still running (released at exit)
        self._database_down_until = 0.0  # monotonic; while in the future, hold without trying
        self._last_write_ok = 0.0  # monotonic
        self._suspects: dict[str, float] = {}  # key -> monotonic time it stops being one

    async def archive(
        self, keys: Sequence[str], due_ms: int, received: Mapping[str, float] | None = None
    ) -> model.BatchOutcome:
        """Archive the due keys among `keys`; never raises for one bad checkpoint.
        `received`: when each key's trigger arrived (monotonic), else now: what `ms` counts from.
        Keys are claimed in rounds, each holding at most ARCHIVER_BATCH_BYTES of values."""
        started = _Started(received or {}, time.monotonic())
        pending = list(dict.fromkeys(keys))
        outcome = model.BatchOutcome(requested=len(pending))
        while pending:
            claims = await self.redis.claim(pending, self.token, due_ms)
            started.lap("claim_ms")
            pending = [c.key for c in claims if c.status is model.ClaimStatus.DEFERRED]
            this_round = model.BatchOutcome()
            await self._round(claims, this_round, started)
            outcome.add(this_round)
        return outcome

    async def release_in_flight(self) -> None:
        """On the way out: drop the claims of batches cut short, so that other archivers need
        not wait for their leases to run out."""
        if self.in_flight:
            await self.redis.release(sorted(self.in_flight), self.token)
            self.in_flight.clear()

    async def _round(
        self, claims: Sequence[model.Claim], outcome: model.BatchOutcome, started: _Started
    ) -> None:
        await self._note_unclaimed(claims, outcome)
        claimed = [c for c in claims if c.status is model.ClaimStatus.CLAIMED]
        oversized = [c for c in claims if c.status is model.ClaimStatus.OVERSIZED]
        mine = [c.key for c in (*claimed, *oversized)]
        self.in_flight.update(mine)
        try:
            for claim in oversized:
                await self._dead_letter_oversized(claim, outcome)
            if claimed:
                await self._archive_claimed(claimed, outcome, started)
                _log_batch(outcome, started)
        except Exception:
            self.in_flight.difference_update(mine)
            raise
        self.in_flight.difference_update(mine)  # (cancelled: kept, released on the way out)
        metrics.BATCH_SIZE.observe(len(claimed))

    async def _note_unclaimed(
        self, claims: Sequence[model.Claim], outcome: model.BatchOutcome
    ) -> None:
        rearmed, gone = {}, []
        for c in claims:
            if c.status is model.ClaimStatus.REARMED:
                rearmed[c.key] = c.pttl_ms
            elif c.status in (model.ClaimStatus.GONE, model.ClaimStatus.DONE):
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

    async def _dead_letter_oversized(self, claim: model.Claim, outcome: model.BatchOutcome) -> None:
        """A value over ARCHIVER_MAX_PAYLOAD is never read whole: its first bytes, size and
        SHA-1 go to the dead letters in a transaction of their own, then it is deleted if it
        still has that size and those first bytes."""
        kept = await self.redis.read_oversized(claim.key, claim.size, OVERSIZED_HEAD_BYTES)
        if kept is None:  # rewritten or gone meanwhile: the next trigger looks again
            await self.redis.release([claim.key], self.token)
            return
        error = (
            f"payload: {kept.size} bytes is over the limit of {self.policy.max_payload}"
            f" (ARCHIVER_MAX_PAYLOAD); only its first {len(kept.head)} bytes are kept"
        )
        letter = model.DeadLetter(claim.key, kept.head, error, size=kept.size, sha1=kept.sha1)
        mark = checkpoints.Fingerprint(checkpoints.digest(kept.head), kept.size, len(kept.head))
        try:
            async with asyncio.timeout(self.policy.write_timeout):
                await self.store.write([], [letter])
        except Exception as exc:  # the database failed: hold it like any other checkpoint
            await self._hold({claim.key: mark}, exc, outcome)
            return
        await self.redis.finish([(claim.key, mark)], self.token)
        _count_dead(letter, outcome)

    async def _archive_claimed(
        self, claimed: Sequence[model.Claim], outcome: model.BatchOutcome, started: _Started
    ) -> None:
        inputs = await self.redis.inputs(claimed)
        decoded = await self._decode(claimed, inputs)
        started.lap("decode_ms")
        if decoded.not_ready:
            await self._retry_later(decoded.not_ready, outcome)
            if not decoded.values:
                return
        now = time.monotonic()
        suspects = {
            c.source_key for c in decoded.checkpoints if self._suspects.get(c.source_key, 0) > now
        }
        if not suspects:
            await self._archive_group(decoded, outcome, started)
            return
        # Any checkpoint whose batch timed out lately is written alone, all at once beside the
        # others: one slow checkpoint holds none hostage, and a slow database costs one timeout.
        rest, alone = decoded.split(suspects)
        groups = [rest, *alone] if rest.values else alone
        done = await asyncio.gather(
            *(self._archive_group(g, outcome, started) for g in groups), return_exceptions=True
        )
        for failure in done:
            if isinstance(failure, BaseException):
                raise failure

    async def _archive_group(
        self, decoded: Decoded, outcome: model.BatchOutcome, started: _Started
    ) -> None:
        if time.monotonic() < self._database_down_until:
            # PostgreSQL just failed: hold at once instead of making every batch wait for
            # its own timeout while more checkpoints come due behind it.
            await self._hold(await _marks(decoded), exceptions.StoreUnavailableError(), outcome)
            return
        attempt_started = time.monotonic()
        try:
            counts, decoded = await self._write(decoded)
        except Exception as exc:  # the database failed us: keep everything in Redis
            await self._note_failure(exc, decoded, attempt_started)
            await self._hold(await _marks(decoded), exc, outcome)
            return
        self._database_down_until = 0.0
        self._last_write_ok = time.monotonic()
        for c in decoded.checkpoints:
            self._suspects.pop(c.source_key, None)
        started.lap("write_ms")
        await self._finish(decoded, counts, outcome, started)

    async def _note_failure(self, exc: BaseException, decoded: Decoded, since: float) -> None:
        """A batch that timed out while other writes succeeded meanwhile is slow itself: its
        checkpoints are written alone for a while. Otherwise PostgreSQL is failing: hold every
        batch at once for a moment."""
        if store.is_timeout(exc) and self._last_write_ok > since:
            self._suspect([c.source_key for c in decoded.checkpoints])
        elif store.is_transient(exc):
            self._database_down_until = time.monotonic() + self.policy.retry_after_ms / 1000
        if store.is_read_only(exc):  # a failover: the primary may be elsewhere now
            await self.store.reconnect()

    def _suspect(self, keys_: Sequence[str]) -> None:
        now = time.monotonic()
        if len(self._suspects) + len(keys_) > MAX_SUSPECTS:
            self._suspects = {k: t for k, t in self._suspects.items() if t > now}
        room = max(0, MAX_SUSPECTS - len(self._suspects))  # bounded memory, whatever happens
        self._suspects.update(dict.fromkeys(keys_[:room], now + SUSPECT_FOR_S))

    async def _retry_later(self, keys_: Sequence[str], outcome: model.BatchOutcome) -> None:
        """Values still being written (a source's NotReadyError): not a dead letter; released
        and scheduled again after the retry delay."""
        await self.redis.release(keys_, self.token)
        self.in_flight.difference_update(keys_)
        await self.redis.schedule(dict.fromkeys(keys_, self.policy.retry_after_ms))
        outcome.skipped += len(keys_)
        log.info("checkpoint.not_ready", checkpoints=len(keys_), detail="retried shortly")

    async def _decode(self, claimed: Sequence[model.Claim], inputs: dict[str, bytes]) -> Decoded:
        """Decode on the event loop only what is cheap to decode (see DECODE_INLINE_BYTES)."""
        size = sum(len(v) for v in inputs.values())
        if size > DECODE_INLINE_BYTES or any(codecs.is_pickle(v) for v in inputs.values()):
            return await asyncio.to_thread(self._decode_all, claimed, inputs)
        return self._decode_all(claimed, inputs)

    def _decode_all(self, claimed: Sequence[model.Claim], inputs: dict[str, bytes]) -> Decoded:
        good, dead, values, not_ready = [], [], {}, []
        for c in claimed:
            raw = inputs.get(c.key, c.value or b"")
            try:
                good.append(self._decode_one(c.key, raw))
            except exceptions.NotReadyError:
                not_ready.append(c.key)
                continue
            except Exception as exc:  # anything unreadable is dead-lettered with its bytes
                dead.append(model.DeadLetter(c.key, raw, str(exc) or type(exc).__name__))
            values[c.key] = c.value or b""
        return Decoded(good, dead, values, tuple(not_ready))

    def _decode_one(self, key: str, raw: bytes) -> model.Checkpoint:
        return self.redis.source.decode(key, raw)

    async def _write(self, decoded: Decoded) -> tuple[dict[str, int], Decoded]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.db_attempts),
            wait=wait_fixed(self.policy.db_delay),
            retry=retry_if_exception(store.is_transient),
            reraise=True,
        )
        timeout = self.policy.timeout_for(decoded.size)
        source = self.redis.source
        fresh = source.unseen(decoded.checkpoints)
        async for attempt in retrying:
            with attempt:
                counts, refused = await self._write_isolating(
                    fresh, decoded.dead, decoded.values, timeout
                )
        gone = {d.source_key for d in refused}
        source.remember([c for c in fresh if c.source_key not in gone])
        kept = [c for c in decoded.checkpoints if c.source_key not in gone]
        return counts, Decoded(kept, decoded.dead + refused, decoded.values)

    async def _write_isolating(
        self,
        batch: list[model.Checkpoint],
        dead: list[model.DeadLetter],
        raw: dict[str, bytes],
        limit_s: float,
    ) -> tuple[dict[str, int], list[model.DeadLetter]]:
        """Write the batch; if PostgreSQL refuses the data, split it so one bad checkpoint
        fails alone, and dead-letter that one with its raw bytes."""
        try:
            async with asyncio.timeout(limit_s):  # a hung server, too
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
        first, refused_first = await self._write_isolating(batch[:half], dead, raw, limit_s)
        second, refused_second = await self._write_isolating(batch[half:], [], raw, limit_s)
        return first | second, refused_first + refused_second

    async def _finish(
        self,
        decoded: Decoded,
        counts: dict[str, int],
        outcome: model.BatchOutcome,
        started: _Started,
    ) -> None:
        finished = await self.redis.finish(list((await _marks(decoded)).items()), self.token)
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
            _count_dead(d, outcome)
        for key in changed:
            outcome.changed += 1
            log.info("checkpoint.changed", key=key, detail="rewritten while archiving; kept")

    async def _hold(
        self,
        marks: dict[str, checkpoints.Fingerprint],
        exc: BaseException,
        outcome: model.BatchOutcome,
    ) -> None:
        """PostgreSQL failed: keep the checkpoints alive (bounded by MAX_HOLD) and retry later."""
        backoff_ms = max(1, self.policy.retry_after_ms * 4 // 5)
        left = await self.redis.hold(marks, self.token, backoff_ms)
        for key, ms in left.items():
            if 0 <= ms <= self.policy.retry_after_ms:
                metrics.HOLD_EXHAUSTED.inc()
                log.error("checkpoint.hold_exhausted", key=key, detail="ARCHIVER_MAX_HOLD reached")
        await self.redis.schedule(dict.fromkeys(marks, self.policy.retry_after_ms))
        outcome.errors += len(marks)
        outcome.held += len(marks)
        metrics.ERRORS.labels(stage="database").inc(len(marks))
        log.error(
            "batch.failed", checkpoints=len(marks), error=_describe(exc), action="held in Redis"
        )


async def _marks(decoded: Decoded) -> dict[str, checkpoints.Fingerprint]:
    """The SHA-1 of each claimed value; off the event loop for a large batch, as decoding is
    (hashing 64 MB takes tens of milliseconds)."""
    if decoded.size > DECODE_INLINE_BYTES:
        return await asyncio.to_thread(_fingerprints, decoded.values)
    return _fingerprints(decoded.values)


def _fingerprints(values: dict[str, bytes]) -> dict[str, checkpoints.Fingerprint]:
    return {k: checkpoints.fingerprint(v) for k, v in values.items()}


def _count_dead(letter: model.DeadLetter, outcome: model.BatchOutcome) -> None:
    outcome.dead_letters += 1
    metrics.DEAD_LETTERS.inc()
    if letter.truncated:
        metrics.OVERSIZED.inc()
    log.warning(
        "checkpoint.dead_lettered", key=letter.source_key, error=letter.error,
        bytes=letter.size if letter.truncated else len(letter.raw),
    )  # fmt: skip


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
