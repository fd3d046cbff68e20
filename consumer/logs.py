"""Structured logs: one JSON line per event with a stable `event` name; readable on a terminal.

Message content never goes into a log line: the archive path logs keys, ids and counts only.
JSON lines are rendered by orjson (a line per archived checkpoint is on the hot path); a value
orjson refuses (a key kept with surrogate escapes, an integer beyond 64 bits) falls back to the
standard library, which escapes it, so that logging never fails.

Logging never waits for whoever reads the logs. Lines go to a `Sink`: a queue bounded in bytes
that a thread drains to stderr. When the reader stalls (a pager, a stuck log shipper, a
blocking Docker logging driver, a parent that reads at the end), the pipe fills, the thread
blocks in its write, the queue fills, and further lines are dropped and counted
(`archiver_log_lines_dropped_total`) instead of stopping the event loop; once a write goes
through again, a `logs.dropped` warning says how many were lost. Warnings of the standard
library's `logging` take the same way.

`info_lines` writes many lines of one event (a batch's `checkpoint.archived`) at once: the same
JSON objects, rendered without the per-line processor chain and queued in one piece.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog

from consumer import metrics

DEFAULT_BUFFER = 4 * 1024 * 1024
EXIT_DRAIN_S = 1.0  # at exit, wait this long at most for queued lines to be written


class Sink:
    """Where log lines go: `write` never blocks. Lines wait in a queue of at most `limit`
    bytes, written by a thread of its own; what does not fit is dropped and counted, and the
    first write that goes through afterwards is followed by a line saying how many."""

    def __init__(
        self, out: Callable[[bytes], None], limit: int, dropped_line: Callable[[int], bytes]
    ) -> None:
        self._out = out
        self._limit = limit
        self._dropped_line = dropped_line
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes queued or being written
        self._dropped = 0  # lines dropped since the last `logs.dropped` line
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes | str) -> int:
        chunk = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
        with self._cond:
            if self._queued + len(chunk) > self._limit:
                lines = chunk.count(b"\n") or 1
                self._dropped += lines
                metrics.LOG_LINES_DROPPED.inc(lines)
                return len(data)
            self._chunks.append(chunk)
            self._queued += len(chunk)
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the writer thread flushes (the loggers call this after each line)."""

    def wait_written(self, timeout: float) -> bool:
        """Wait until every queued line is written (tests, exit); False if that took longer."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._chunks and not self._busy, timeout)

    def close(self, timeout: float) -> None:
        """Write what is queued (waiting at most `timeout`), then stop the thread."""
        self.wait_written(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _drain(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._chunks or self._closed)
                if not self._chunks:
                    return
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._busy = True
            self._send(data)
            with self._cond:
                self._queued -= len(data)
                self._busy = bool(self._dropped)
                dropped, self._dropped = self._dropped, 0
                self._cond.notify_all()
            if dropped:
                self._send(self._dropped_line(dropped))
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, data: bytes) -> None:
        try:
            self._out(data)
        except (OSError, ValueError):  # stderr closed: nobody reads; count them as dropped
            metrics.LOG_LINES_DROPPED.inc(data.count(b"\n") or 1)


def _writer(out: TextIO) -> Callable[[bytes], None]:
    """Bytes to `out`: straight to its file descriptor when it has one (never through the
    Python-level buffer, which a blocked thread would hold locked at interpreter exit)."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests)
        return _StreamWriter(out)

    def write_all(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write_all


@dataclass(frozen=True, slots=True)
class _StreamWriter:
    out: TextIO

    def __call__(self, data: bytes) -> None:
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            self.out.write(data.decode("utf-8", "replace"))
        else:
            buffer.write(data)
            buffer.flush()
        self.out.flush()


_SINK: list[Sink] = []  # the current one (replaced by each `configure`)


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    buffer_bytes: int = DEFAULT_BUFFER,
) -> None:
    """Log at `level` to `stream` (stderr): JSON lines, or colours on a terminal (`auto`),
    through a Sink of `buffer_bytes`."""
    out = stream if stream is not None else sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    threshold = logging.getLevelNamesMapping()[level.upper()]
    sink = _replace_sink(Sink(_writer(out), buffer_bytes, _dropped_line(json_lines, out)))
    processors = _processors(
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=(
            structlog.BytesLoggerFactory(file=sink)  # type: ignore[arg-type]
            if json_lines
            else structlog.WriteLoggerFactory(file=sink)  # type: ignore[arg-type]
        ),
        cache_logger_on_first_use=False,
    )
    config = structlog.get_config() | {"processors": list(processors)}  # a copy, to compare
    direct = json_lines and threshold <= logging.INFO
    _DIRECT[:] = [_Direct(config, sink)] if direct else []
    _bridge_stdlib_logging()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every line logged so far is written (False: the reader is still stalled)."""
    return _SINK[0].wait_written(timeout) if _SINK else True


def _replace_sink(sink: Sink) -> Sink:
    for previous in _SINK:
        previous.close(EXIT_DRAIN_S)
    if not _SINK:
        atexit.register(_close_at_exit)
    _SINK[:] = [sink]
    return sink


def _close_at_exit() -> None:
    for sink in _SINK:
        sink.close(EXIT_DRAIN_S)


def _dropped_line(json_lines: bool, out: TextIO) -> Callable[[int], bytes]:
    def render(lines: int) -> bytes:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event = {"event": "logs.dropped", "lines": lines, "level": "warning", "timestamp": stamp,
                 "detail": "the reader of the logs lagged; these lines were dropped, not waited for"}  # fmt: skip
        if json_lines:
            return _dumps(event) + b"\n"
        return f"{stamp} [warning  ] logs.dropped lines={lines}\n".encode()

    return render


class _ToStructlog(logging.Handler):
    """The standard library's log records (asyncpg, aiohttp, asyncio) as our lines."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            structlog.get_logger(record.name).log(record.levelno, record.getMessage())


def _bridge_stdlib_logging() -> None:
    """Without a handler, `logging` writes warnings to stderr itself, blocking on a stalled
    reader; give it ours (unless the caller configured its own)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_ToStructlog(logging.WARNING))
        logging.captureWarnings(True)


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
    stream: Sink

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


def _dumps(event: dict[str, Any], **kwargs: Any) -> bytes:
    try:
        return orjson.dumps(event, default=kwargs.get("default"))
    except orjson.JSONEncodeError:
        return json.dumps(event, default=repr).encode()
