"""The sweeper: SCAN over checkpoint keys, archive what could expire before the next sweep,
repair missing shadows. Notifications are hints; the sweep is the truth."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import structlog

from consumer import archive, metrics, model, store
from consumer.settings import Settings

log = structlog.get_logger("consumer.sweeper")


@dataclass(slots=True)
class SweepReport:
    """What one sweep found and did."""

    found: int = 0
    due: int = 0
    shadows_repaired: int = 0  # checkpoints whose shadow or deadline-index entry was put back
    outcome: model.BatchOutcome = field(default_factory=model.BatchOutcome)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    skipped: bool = False

    @property
    def completed(self) -> bool:
        """The pass over Redis finished: every due checkpoint was archived, dead-lettered or
        held safely in Redis. This is what health calls a successful sweep."""
        return not self.skipped

    @property
    def ok(self) -> bool:
        """Completed, and no checkpoint failed."""
        return self.completed and self.outcome.errors == 0


@dataclass(frozen=True, slots=True)
class Window:
    """Which checkpoints a sweep archives, in ms: those that could expire before the next
    sweep (due_ms); in `archiver run`, whose deadline poller archives indexed checkpoints on
    time, only those already due (event_due_ms) among checkpoints with shadow and index entry."""

    due_ms: int
    event_due_ms: int
    archive_after_ms: int

    @classmethod
    def of(cls, s: Settings) -> Window:
        slack = 1000 + int(2 * s.deadline_poll * 1000)
        return cls(
            due_ms=int((s.buffer + s.sweep_interval) * 1000),
            event_due_ms=int(s.buffer * 1000) + slack,
            archive_after_ms=int(s.archive_after * 1000),
        )


class Sweeper:
    """One sweep at a time across replicas, under a leased lock."""

    def __init__(
        self,
        archiver: archive.Archiver,
        store_: store.Store,
        settings: Settings,
        *,
        index_polled: bool = False,
    ) -> None:
        self.index_polled = index_polled
        self.archiver = archiver
        self.redis = archiver.redis
        self.store = store_
        self.settings = settings
        self.window = Window.of(settings)

    async def sweep(self) -> SweepReport:
        """Run one sweep; skipped (not an error) if another replica holds the lock."""
        report = SweepReport()
        started = time.monotonic()
        token = uuid.uuid4().hex
        lease_ms = int(self.settings.sweep_lease * 1000)
        if not await self.redis.take_sweep_lock(token, lease_ms):
            report.skipped = True
            log.info("sweep.skipped", reason="another sweep holds the lock")
            return report
        try:
            await self._scan(report, token, lease_ms)
        finally:
            await self.redis.release_sweep_lock(token)
            report.duration_s = time.monotonic() - started
        await self._record(report)
        return report

    async def _scan(self, report: SweepReport, token: str, lease_ms: int) -> None:
        """Page through the checkpoint keys; the next page is read while this one is handled,
        so that round trips to Redis overlap with our own work on a page."""
        renewed = time.monotonic()
        pending = asyncio.ensure_future(self._page(0))
        try:
            while True:
                cursor, batch = await pending
                if cursor != 0:
                    pending = asyncio.ensure_future(self._page(cursor))
                report.found += len(batch)
                if batch:
                    await self._handle(batch, report)
                if time.monotonic() - renewed > lease_ms / 4000:
                    await self._renew(token, lease_ms)
                    renewed = time.monotonic()
                if cursor == 0:
                    return
        finally:  # an error on this page: the page read ahead is dropped (and its error read)
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

    async def _page(self, cursor: int) -> tuple[int, list[str]]:
        """One SCAN page: the next cursor and the checkpoint keys found."""
        return await self.redis.scan_page(cursor, self.settings.scan_count)

    async def _renew(self, token: str, lease_ms: int) -> None:
        """Extend the sweep lock (renewed every quarter lease while the sweep runs)."""
        await self.redis.renew_sweep_lock(token, lease_ms)

    async def _handle(self, batch: Sequence[str], report: SweepReport) -> None:
        due, unarmed = await self._classify(batch)
        report.due += len(due)
        size = self.settings.batch_size
        for i in range(0, len(due), size):
            report.outcome.add(await self.archiver.archive(due[i : i + size], self.window.due_ms))
        if unarmed:
            armed = await self.redis.arm(unarmed)
            repaired = sum(1 for ms in armed.values() if ms > 0)
            report.shadows_repaired += repaired
            metrics.SHADOWS_ARMED.labels(source="sweep").inc(repaired)

    async def _classify(self, batch: Sequence[str]) -> tuple[list[str], list[str]]:
        """Split keys into due ones and not-due ones missing their shadow or index entry
        (one script call per SCAN page: only those keys come back). A checkpoint without a
        TTL is due once its key's time is ARCHIVE_AFTER old by Redis's clock."""
        w = self.window
        window = [w.due_ms, w.event_due_ms, int(self.index_polled), w.archive_after_ms]
        return await self.redis.classify(batch, window)

    async def _record(self, report: SweepReport) -> None:
        o = report.outcome
        metrics.SWEEPS.labels(result="ok" if report.ok else "errors").inc()
        metrics.SWEEP_DURATION.set(report.duration_s)
        if report.completed:
            metrics.LAST_SWEEP_OK.set(time.time())
            await self.redis.stamp_sweep()
        log.info(
            "sweep.completed", found=report.found, due=report.due, archived=o.archived,
            messages=o.messages, dead_letters=o.dead_letters, errors=o.errors,
            shadows_repaired=report.shadows_repaired, duration_s=round(report.duration_s, 3),
        )  # fmt: skip
        run = store.Run(
            kind="sweep", host=socket.gethostname(), started_at=report.started_at,
            finished_at=datetime.now(UTC), status="ok" if report.ok else "errors",
            found=report.found, archived=o.archived, messages=o.messages,
            dead_letters=o.dead_letters, errors=o.errors,
            details={"due": report.due, "shadows_repaired": report.shadows_repaired,
                     "duration_s": round(report.duration_s, 3), **asdict(o)},
        )  # fmt: skip
        try:
            await self.store.record_run(run)
        except Exception as exc:  # recording is bookkeeping; the sweep itself is done
            log.warning("sweep.not_recorded", error=f"{type(exc).__name__}: {exc}"[:300])
