"""What a request may say: ids, times, page sizes and cursors, each bounded, and no parameter
the endpoint does not know (400). Anything else is a 422 from FastAPI's validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query, Request
from pydantic import AfterValidator, AwareDatetime

from consumer.api import problems

MAX_ID = 256
# Printable text: no C0 control characters, DEL or C1 controls (PostgreSQL refuses NUL anyway).
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_CURSOR = 1024


def _utc(moment: datetime) -> datetime:
    """The time in UTC; out of the representable range is a validation error, not a 500."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


Time = Annotated[AwareDatetime, AfterValidator(_utc)]

_ID = {"min_length": 1, "max_length": MAX_ID, "pattern": ID_PATTERN}
CustomerQuery = Annotated[str | None, Query(description="Only this customer's.", **_ID)]
UserQuery = Annotated[str | None, Query(description="Only this user's.", **_ID)]
ConversationPath = Annotated[str, Path(description="The conversation's id.", **_ID)]
CustomerPath = Annotated[str, Path(description="The customer's id.", **_ID)]
UserPath = Annotated[str, Path(description="The user's id.", **_ID)]
ErasureIdPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="The erasure's id.")]
Since = Annotated[Time | None, Query(description="From this time on (RFC 3339, with a zone).")]
Until = Annotated[Time | None, Query(description="Before this time (RFC 3339, with a zone).")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1, max_length=MAX_CURSOR, pattern=r"^[A-Za-z0-9_-]+$",
        description="The `next_cursor` of the previous page.",
    ),
]  # fmt: skip


def only(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing (400) a query parameter not in `names`, or one given twice."""
    allowed = frozenset(names)

    async def check(request: Request) -> None:  # async: FastAPI runs it inline, not in a thread
        given = [key for key, _ in request.query_params.multi_items()]
        unknown = sorted({key for key in given if key not in allowed})
        if unknown:
            shown = ", ".join(repr(key[:40]) for key in unknown[:5])
            raise problems.Problem(400, f"unknown query parameter(s): {shown}; this endpoint"
                                   f" takes {', '.join(sorted(allowed)) or 'none'}")  # fmt: skip
        twice = sorted({key for key in given if given.count(key) > 1})
        if twice:
            raise problems.Problem(
                400, f"query parameter(s) given more than once: {', '.join(twice)}"
            )

    return check
