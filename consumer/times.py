"""Times on the command line: what a person may type, and the one way times are printed.

Accepted wherever a command takes a time (`--since`, `--until`):

* ISO 8601 with a zone: `2026-12-07T17:42:20Z`, `2026-12-07T18:42:20+01:00`;
* ISO 8601 without one (`2026-12-07 17:42`, `2026-12-07`): read in the zone of `--tz`, UTC
  unless given (never in ARCHIVER_TIMEZONE, which is about checkpoint payloads);
* a duration ago: `90s`, `15m`, `1h`, `7d`, `2w`, resolved against the database's clock
  (never this host's); `now`.

Printed: always UTC, ISO 8601 with `Z`. Tables show whole seconds (rounded down, so a time
copied from a table into `--since` includes its row); JSON keeps the microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
EXAMPLES = "ISO 8601 such as 2026-12-07T17:42:20Z or 2026-12-07, or a duration ago such as 1h or 7d"


@dataclass(frozen=True, slots=True)
class Ago:
    """A time given relative to now: resolved against the database's clock."""

    seconds: float


Instant = datetime | Ago


def parse(text: str, zone: tzinfo = UTC) -> Instant:
    """A time typed by a person; ValueError with the accepted forms if it is none of them."""
    cleaned = text.strip()
    if cleaned.lower() == "now":
        return Ago(0.0)
    ago = _AGO.match(cleaned.lower())
    if ago:
        return Ago(float(ago.group(1)) * _UNITS[ago.group(2)])
    return _absolute(cleaned, zone)


def _absolute(text: str, zone: tzinfo) -> datetime:
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use {EXAMPLES})") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def resolve(instant: Instant, now: datetime) -> datetime:
    """The absolute time an instant stands for, `now` being the database's clock."""
    if isinstance(instant, Ago):
        return now - timedelta(seconds=instant.seconds)
    return instant


def zone(name: str) -> tzinfo:
    """A zone for `--tz`: an IANA name (Europe/Madrid), UTC, or an offset (+02:00)."""
    offset = _OFFSET.match(name.strip())
    if offset:
        sign = -1 if offset.group(1) == "-" else 1
        minutes = int(offset.group(2)) * 60 + int(offset.group(3))
        return timezone(sign * timedelta(minutes=minutes))
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use a name such as Europe/Madrid, UTC, or +02:00)"
        ) from None


def iso(moment: datetime) -> str:
    """The one printed form, with microseconds when there are any: 2026-12-07T17:42:20.500000Z."""
    spec = "microseconds" if moment.microsecond else "seconds"
    return _utc(moment).isoformat(timespec=spec).replace("+00:00", "Z")


def text(moment: datetime) -> str:
    """The printed form in whole seconds, for tables: 2026-12-07T17:42:20Z."""
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def age(seconds: float) -> str:
    """A short age for people: 3s, 4m 10s, 2h 5m, 3d 4h."""
    whole = max(0, int(seconds))
    for big, small in (("d", "h"), ("h", "m"), ("m", "s")):
        if whole >= _UNITS[big]:
            high, rest = divmod(whole, _UNITS[big])
            low = rest // _UNITS[small]
            return f"{high}{big} {low}{small}" if low else f"{high}{big}"
    return f"{whole}s"
