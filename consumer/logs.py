"""Structured logs: one JSON line per event with a stable `event` name; readable on a terminal.

Message content never goes into a log line: the archive path logs keys, ids and counts only.
JSON lines are rendered by orjson (a line per archived checkpoint is on the hot path); a value
orjson refuses (a key kept with surrogate escapes, an integer beyond 64 bits) falls back to the
standard library, which escapes it, so that logging never fails.

`info_lines` writes many lines of one event (a batch's `checkpoint.archived`) at once: the same
JSON objects, rendered without the per-line processor chain and written with one system call.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import orjson
import structlog


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Log at `level` to `stream` (stderr): JSON lines, or colours on a terminal (`auto`)."""
    out = stream if stream is not None else sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    threshold = logging.getLevelNamesMapping()[level.upper()]
    raw = out.buffer if json_lines and hasattr(out, "buffer") else None
    processors = _processors(
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=(
            structlog.BytesLoggerFactory(file=raw)
            if raw is not None
            else structlog.PrintLoggerFactory(file=out)
        ),
        cache_logger_on_first_use=False,
    )
    config = structlog.get_config() | {"processors": list(processors)}  # a copy, to compare
    direct = raw is not None and threshold <= logging.INFO
    _DIRECT[:] = [_Direct(config, raw)] if raw is not None and direct else []


def _processors(renderer: Any) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]


@dataclass(frozen=True, slots=True)
class _Direct:
    """The configuration under which `info_lines` may write JSON lines itself, and where to."""

    config: dict[str, Any]
    stream: BinaryIO

    def current(self) -> bool:
        """Still configured so (tests capture logs by swapping the processors in place)."""
        now = structlog.get_config()
        return all(now[name] == value for name, value in self.config.items())


_DIRECT: list[_Direct] = []  # set by `configure` when lines are JSON


def info_lines(logger: Any, event: str, records: Iterable[dict[str, Any]]) -> None:
    """Log `event` at info once per record, as `logger.info(event, **record)` would.

    With JSON lines configured, the lines are the same objects (one timestamp for all) in one
    write: about 3 µs a line instead of 7, for the line each archived checkpoint gets."""
    direct = _DIRECT[0] if _DIRECT else None
    if direct is None or not direct.current():
        for record in records:
            logger.info(event, **record)
        return
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    tail = structlog.contextvars.get_contextvars() | {"level": "info", "timestamp": stamp}
    lines = [_dumps({**record, "event": event, **tail}) for record in records]
    if lines:
        direct.stream.write(b"\n".join(lines) + b"\n")
        direct.stream.flush()


def _dumps(event: dict[str, Any], **kwargs: Any) -> bytes:
    try:
        return orjson.dumps(event, default=kwargs.get("default"))
    except orjson.JSONEncodeError:
        return json.dumps(event, default=repr).encode()
