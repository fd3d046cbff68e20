"""Page cursors: opaque to people, tagged with the list they continue, never cut when shown.

A cursor is the sort key of the last row of a page, as URL-safe base64 of a JSON array whose
first element names the list (`conversations`, `history`, `dead-letters`), so that a cursor of
one list given to another is refused with a clear message rather than misread.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from consumer import exceptions


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, and the cursor of the next one (None on the last)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode(kind: str, *key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).decode().rstrip("=")


def decode(kind: str, cursor: str, size: int) -> list[Any]:
    """The `size` key values of a cursor made by `encode(kind, ...)`; UsageError otherwise."""
    try:
        padded = cursor.strip() + "=" * (-len(cursor.strip()) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        value = None
    if not isinstance(value, list) or len(value) != size + 1 or value[0] != kind:
        raise exceptions.UsageError(
            f"--after: not a cursor of `archiver {kind}` (copy the `more: --after` value"
            " or the JSON `next` of the previous page)"
        )
    return value[1:]


def decode_int(kind: str, cursor: str) -> int:
    """A cursor whose key is one integer (an id)."""
    (value,) = decode(kind, cursor, 1)
    if not isinstance(value, int):
        raise exceptions.UsageError(f"--after: a damaged cursor of `archiver {kind}`")
    return value
