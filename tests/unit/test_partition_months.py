"""Which month's partition the warm-up creates ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

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
