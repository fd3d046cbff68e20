"""Which monthly partitions a batch needs, and which one the warm-up creates ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer import model, store
from consumer.store import next_month


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 22, 4, 5, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 31, 12, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
    ],
)
def test_next_month_is_the_first_instant_of_the_following_month(
    moment: datetime, expected: datetime
) -> None:
    assert next_month(moment) == expected


def test_next_month_keeps_the_moments_zone() -> None:
    zone = timezone(timedelta(hours=-5))
    assert next_month(datetime(2026, 1, 31, 22, tzinfo=zone)) == datetime(2026, 2, 1, tzinfo=zone)


def _checkpoint(*stamps: datetime) -> model.Checkpoint:
    messages = tuple(model.Message(f"id:{i}", "user", "x", s, {}) for i, s in enumerate(stamps))
    return model.Checkpoint("k", "c", "t", None, None, messages)


def _moments(*checkpoints: model.Checkpoint) -> set[tuple[int, int]]:
    columns = store._conversation_columns(checkpoints)
    found = store._partition_moments(checkpoints, columns[4], columns[5])
    return {(m.year, m.month) for m in found}


def test_a_batch_within_one_month_needs_that_month_only() -> None:
    day = datetime(2026, 11, 22, tzinfo=UTC)
    assert _moments(_checkpoint(day, day + timedelta(hours=3))) == {(2026, 11)}


def test_a_conversation_across_a_month_end_needs_both_months() -> None:
    end = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    assert _moments(_checkpoint(end, end + timedelta(minutes=2))) == {(2026, 11), (2026, 12)}


def test_a_conversation_spanning_years_needs_only_the_months_holding_messages() -> None:
    first, last = datetime(1999, 1, 5, tzinfo=UTC), datetime(2150, 6, 1, tzinfo=UTC)
    assert _moments(_checkpoint(first, last)) == {(1999, 1), (2150, 6)}


def test_a_checkpoint_without_messages_needs_no_partition() -> None:
    assert _moments(_checkpoint()) == set()
