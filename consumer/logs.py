"""Structured logs: one JSON line per event with a stable `event` name; readable on a terminal.

Message content never goes into a log line: the archive path logs keys, ids and counts only.
JSON lines are rendered by orjson (a line per archived checkpoint is on the hot path); a value
orjson refuses (a key kept with surrogate escapes, an integer beyond 64 bits) falls back to the
standard library, which escapes it, so that logging never fails.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import orjson
import structlog


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Log at `level` to `stream` (stderr): JSON lines, or colours on a terminal (`auto`)."""
    out = stream if stream is not None else sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    factory: Any = (
        structlog.BytesLoggerFactory(file=out.buffer)
        if json_lines and hasattr(out, "buffer")
        else structlog.PrintLoggerFactory(file=out)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _dumps(event: dict[str, Any], **kwargs: Any) -> bytes:
    try:
        return orjson.dumps(event, default=kwargs.get("default"))
    except orjson.JSONEncodeError:
        return json.dumps(event, default=repr).encode()
