"""Workers that take hints in batches and run the archive path (or arm shadows) on them."""

from __future__ import annotations

import structlog

from consumer import archive, health, hints, metrics, model

log = structlog.get_logger("consumer.batcher")


class Batcher:
    def __init__(
        self,
        queue: hints.HintQueue,
        archiver: archive.Archiver,
        state: health.State,
        *,
        size: int,
        wait: float,
        due_ms: int,
    ) -> None:
        self.queue = queue
        self.archiver = archiver
        self.state = state
        self.size = size
        self.wait = wait
        self.due_ms = due_ms

    async def work(self) -> None:
        """One worker: forever take a batch and process it; a failed batch never stops it."""
        while True:
            batch = await self.queue.take(self.size, self.wait)
            try:
                await self.process(batch)
            except Exception as exc:  # Redis trouble: the hints are lost; index + sweeper cover
                metrics.ERRORS.labels(stage="batch").inc()
                self.state.errors += 1
                log.error(
                    "batch.error", hints=len(batch), error=f"{type(exc).__name__}: {exc}"[:300]
                )

    async def process(self, batch: list[hints.Hint]) -> model.BatchOutcome:
        arm = list(dict.fromkeys(h.key for h in batch if h.kind == "arm"))
        due = [h for h in batch if h.kind == "archive"]
        outcome = model.BatchOutcome()
        if due:
            received: dict[str, float] = {}
            for h in due:  # a key hinted twice waits since its first hint
                received.setdefault(h.key, h.received)
            outcome = await self.archiver.archive(list(received), self.due_ms, received)
            tally(self.state, outcome)
        if arm:  # keys already due are left to the deadline index (arm() schedules them)
            armed = await self.archiver.redis.arm(arm)
            metrics.SHADOWS_ARMED.labels(source="event").inc(
                sum(1 for ms in armed.values() if ms > 0)
            )
        return outcome


def tally(state: health.State, outcome: model.BatchOutcome) -> None:
    state.checkpoints_archived += outcome.archived
    state.messages_archived += outcome.messages
    state.dead_letters += outcome.dead_letters
    state.errors += outcome.errors
    state.recent_errors += outcome.errors
