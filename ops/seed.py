"""Months of archived history loaded straight into PostgreSQL, for retention's benchmark, its
fault scenario and its tests: conversations of several tenants spread over the past months
(some crossing a month boundary), their rows in conversation_history and `conversations`,
loaded by COPY as the archive path would have left them.

Each message gets a unique content-hash identity; content is ~`chars` characters of filler
(no real text), and timestamps are spread evenly over each month, up to `now` for the current
one, so that every tenant has rows in every month.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from consumer import partitions, queries

HISTORY_COLUMNS = (
    "tenant_id", "customer_id", "user_id", "conversation_id", "timestamp", "message_role",
    "message_content", "metadata", "message_key", "source_key",
)  # fmt: skip
CONVERSATION_COLUMNS = (
    "tenant_id", "conversation_id", "customer_id", "user_id", "started_at", "ended_at",
)  # fmt: skip
CHUNK = 50_000  # rows per COPY


@dataclass(frozen=True, slots=True)
class Shape:
    """`rows` messages over `months` months (the current one included) and `tenants`."""

    tenants: tuple[str, ...]
    months: int
    rows: int
    per_conversation: int = 10
    chars: int = 200
    crossing: bool = True  # each tenant-month's last conversation ends in the next month


@dataclass(slots=True)
class Loaded:
    """What was loaded: rows per (tenant, month start)."""

    rows: dict[tuple[str, datetime], int] = field(default_factory=dict)
    conversations: int = 0

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True, slots=True)
class _Conversation:
    tenant: str
    conversation_id: str
    stamps: tuple[datetime, ...]

    def identities(self) -> Iterator[tuple[str, str, str, datetime]]:
        """(tenant, conversation, message key, timestamp) of each message."""
        for i, stamp in enumerate(self.stamps):
            key = hashlib.sha256(f"{self.conversation_id}:{i}".encode()).hexdigest()[:32]
            yield self.tenant, self.conversation_id, f"h:{key}", stamp

    def rows(self, filler: str) -> Iterator[tuple[object, ...]]:
        for i, (tenant, conversation, key, stamp) in enumerate(self.identities()):
            yield (
                tenant, f"cust-{conversation}", None, conversation, stamp,
                "user" if i % 2 == 0 else "assistant", filler, "{}", key, f"seed:{conversation}",
            )  # fmt: skip

    def record(self) -> tuple[object, ...]:
        return (
            self.tenant, self.conversation_id, f"cust-{self.conversation_id}", None,
            min(self.stamps), max(self.stamps),
        )  # fmt: skip


def conversations(shape: Shape, now: datetime, prefix: str = "seed") -> Iterator[_Conversation]:
    """Deterministic conversations: for each month and tenant, an equal share of the rows."""
    first = partitions.add_months(partitions.month_start(now), -(shape.months - 1))
    per_cell = max(1, shape.rows // (shape.months * len(shape.tenants) * shape.per_conversation))
    for m in range(shape.months):
        start = partitions.add_months(first, m)
        end = min(partitions.add_months(start, 1), now)
        for tenant in shape.tenants:
            for c in range(per_cell):
                yield _make(shape, tenant, f"{prefix}-{tenant}-{m}-{c}", start, end, c, per_cell)


def _make(
    shape: Shape, tenant: str, name: str, start: datetime, end: datetime, c: int, count: int
) -> _Conversation:
    """Conversation c of `count` in [start, end): messages 7 s apart, spread over the month;
    the last one of a past month has half its messages in the month's last seconds and the
    rest hourly from an hour into the next month."""
    n = shape.per_conversation
    step = timedelta(seconds=7)
    if shape.crossing and c == count - 1 and end == partitions.add_months(start, 1):
        before = tuple(end - step * (n // 2 - i) for i in range(n // 2))
        after = tuple(end + timedelta(hours=i + 1) for i in range(n - n // 2))
        return _Conversation(tenant, name, before + after)
    begin = start + (end - start) / count * c
    return _Conversation(tenant, name, tuple(begin + step * i for i in range(n)))


async def load(
    conn: asyncpg.Connection, shape: Shape, now: datetime, prefix: str = "seed"
) -> Loaded:
    """COPY the shape's conversations (partitions created first); what was loaded."""
    loaded = Loaded()
    filler = ("lorem ipsum dolor sit amet " * (shape.chars // 27 + 1))[: shape.chars]
    batch: list[_Conversation] = []
    for conversation in conversations(shape, now, prefix):
        batch.append(conversation)
        if len(batch) * shape.per_conversation >= CHUNK:
            await _copy(conn, batch, filler, loaded)
            batch = []
    if batch:
        await _copy(conn, batch, filler, loaded)
    return loaded


async def _copy(
    conn: asyncpg.Connection, batch: Sequence[_Conversation], filler: str, loaded: Loaded
) -> None:
    months = {partitions.month_start(s) for c in batch for s in c.stamps}
    for month in sorted(months):
        await conn.execute(queries.get("ensure_partition"), month)
    rows = [row for c in batch for row in c.rows(filler)]
    await conn.copy_records_to_table("conversation_history", records=rows, columns=HISTORY_COLUMNS)
    records = [c.record() for c in batch]
    await conn.copy_records_to_table("conversations", records=records, columns=CONVERSATION_COLUMNS)
    for c in batch:
        for stamp in c.stamps:
            cell = (c.tenant, partitions.month_start(stamp))
            loaded.rows[cell] = loaded.rows.get(cell, 0) + 1
    loaded.conversations += len(batch)
