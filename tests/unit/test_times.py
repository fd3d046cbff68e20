"""Times as people type them on the command line, and the one form they are printed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer import times

MADRID_WINTER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07T17:42:20Z", datetime(2026, 12, 7, 17, 42, 20, tzinfo=UTC)),
        ("2026-12-07t17:42:20z", datetime(2026, 12, 7, 17, 42, 20, tzinfo=UTC)),
        ("2026-12-07T18:42:20+01:00", datetime(2026, 12, 7, 17, 42, 20, tzinfo=UTC)),
        ("2026-12-07T17:42:20.250Z", datetime(2026, 12, 7, 17, 42, 20, 250000, tzinfo=UTC)),
        ("20261207T174220Z", datetime(2026, 12, 7, 17, 42, 20, tzinfo=UTC)),
        ("2026-12-07 17:42", datetime(2026, 12, 7, 17, 42, tzinfo=UTC)),
        ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),
        (" 2026-12-07 ", datetime(2026, 12, 7, tzinfo=UTC)),
    ],
)
def test_iso_8601_with_or_without_a_zone(text: str, expected: datetime) -> None:
    assert times.parse(text) == expected


def test_zone_less_input_is_read_in_the_given_zone() -> None:
    parsed = times.parse("2026-12-07 18:42:20", times.zone("Europe/Madrid"))
    assert parsed == datetime(2026, 12, 7, 17, 42, 20, tzinfo=UTC)
    assert times.parse("2026-12-07T18:42:20", MADRID_WINTER) == parsed


def test_an_explicit_offset_wins_over_the_given_zone() -> None:
    assert times.parse("2026-12-07T17:42:20Z", MADRID_WINTER) == datetime(
        2026, 12, 7, 17, 42, 20, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400),
     ("now", 0), ("NOW", 0), ("1H", 3600)],
)  # fmt: skip
def test_durations_are_that_long_ago(text: str, seconds: float) -> None:
    assert times.parse(text) == times.Ago(seconds)


def test_ago_resolves_against_the_clock_given() -> None:
    db_now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert times.resolve(times.Ago(3600), db_now) == datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
    fixed = datetime(2020, 1, 1, tzinfo=UTC)
    assert times.resolve(fixed, db_now) == fixed


@pytest.mark.parametrize(
    "text", ["yesterday", "", "2026-13-01", "1 hour", "2026", "5", "-1h", "1y"]
)
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a time: .*ISO 8601.*1h"):
        times.parse(text)


def test_what_the_tool_prints_it_accepts() -> None:
    stamp = datetime(2026, 12, 7, 17, 42, 20, 123456, tzinfo=UTC)
    assert times.parse(times.iso(stamp)) == stamp
    assert times.parse(times.text(stamp)) == stamp.replace(microsecond=0)


def test_printed_times_are_utc_with_z() -> None:
    madrid = datetime(2026, 12, 7, 18, 42, 20, tzinfo=MADRID_WINTER)
    assert times.iso(madrid) == "2026-12-07T17:42:20Z"
    assert times.text(madrid.replace(microsecond=999999)) == "2026-12-07T17:42:20Z"
    assert times.iso(madrid.replace(microsecond=5)) == "2026-12-07T17:42:20.000005Z"
    assert times.iso(datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"  # naive: UTC


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("UTC", timedelta(0)),
        ("+02:00", timedelta(hours=2)),
        ("-0530", timedelta(hours=-5, minutes=-30)),
    ],
)
def test_zones_by_name_or_offset(name: str, offset: timedelta) -> None:
    assert times.zone(name).utcoffset(datetime(2026, 1, 1)) == offset


@pytest.mark.parametrize("name", ["Mars/Olympus", "+25:00x", "../etc/passwd", ""])
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        times.zone(name)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.4, "0s"), (59, "59s"), (60, "1m"), (250, "4m 10s"), (7500, "2h 5m"), (90000, "1d 1h"),
     (-3, "0s")],
)  # fmt: skip
def test_ages_for_people(seconds: float, shown: str) -> None:
    assert times.age(seconds) == shown
