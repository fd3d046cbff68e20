"""JSON log lines: one object per event, and logging never fails on an odd value."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog

from consumer import logs, metrics


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


def _lines(level: str = "info") -> tuple[io.TextIOWrapper, structlog.typing.FilteringBoundLogger]:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    logs.configure(level, "json", stream=stream)
    return stream, structlog.get_logger("test")


def _read(stream: io.TextIOWrapper) -> list[dict[str, object]]:
    assert logs.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return [json.loads(line) for line in raw.decode().splitlines()]


def test_each_event_is_one_json_object_with_level_and_time() -> None:
    stream, log = _lines()
    log.info("checkpoint.archived", key="k:1", messages=10, ms=1.5)
    (line,) = _read(stream)
    assert line["event"] == "checkpoint.archived"
    assert line["level"] == "info"
    assert line["messages"] == 10
    assert str(line["timestamp"]).endswith("Z")


def test_values_orjson_refuses_are_escaped_not_raised() -> None:
    stream, log = _lines()
    log.warning("odd", key="bad-\udcff-key", big=2**70, error=ValueError("x"))
    (line,) = _read(stream)
    assert line["key"] == "bad-\udcff-key"
    assert line["big"] == 2**70
    assert line["error"] == "ValueError('x')"


def test_events_below_the_level_are_not_written() -> None:
    stream, log = _lines("warning")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in _read(stream)] == ["loud"]


def test_info_lines_writes_what_one_info_call_per_record_writes() -> None:
    stream, log = _lines()
    records = [{"key": f"k:{i}", "messages": i, "ms": 0.5} for i in range(3)]
    for record in records:
        log.info("checkpoint.archived", **record)
    logs.info_lines(log, "checkpoint.archived", records)
    one_by_one, at_once = _read(stream)[:3], _read(stream)[3:]
    for line in one_by_one + at_once:
        assert str(line.pop("timestamp")).endswith("Z")
    assert at_once == one_by_one


def test_info_lines_escapes_what_orjson_refuses() -> None:
    stream, log = _lines()
    logs.info_lines(log, "checkpoint.archived", [{"key": "bad-\udcff-key"}])
    assert [line["key"] for line in _read(stream)] == ["bad-\udcff-key"]


def test_info_lines_respects_the_level() -> None:
    stream, log = _lines("warning")
    logs.info_lines(log, "checkpoint.archived", [{"key": "k:1"}])
    log.warning("loud")
    assert [line["event"] for line in _read(stream)] == ["loud"]


def test_info_lines_reach_captured_logs() -> None:
    _, log = _lines()
    with structlog.testing.capture_logs() as captured:
        logs.info_lines(log, "checkpoint.archived", [{"key": "k:1"}, {"key": "k:2"}])
    assert [(c["event"], c["key"]) for c in captured] == [
        ("checkpoint.archived", "k:1"),
        ("checkpoint.archived", "k:2"),
    ]


def test_info_lines_on_a_console_go_through_structlog() -> None:
    stream = io.StringIO()
    logs.configure("info", "console", stream=stream)
    logs.info_lines(structlog.get_logger("test"), "checkpoint.archived", [{"key": "k:1"}])
    assert logs.flush()
    assert "checkpoint.archived" in stream.getvalue()
    assert "k:1" in stream.getvalue()


class _StalledReader:
    """A stream whose reader has stopped reading: every write blocks until `resume`."""

    def __init__(self) -> None:
        self.moving = threading.Event()
        self.written: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.moving.wait(timeout=30)
        self.written.append(data)


def _lines_of(chunks: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in b"".join(chunks).splitlines()]


def test_a_stalled_reader_never_blocks_the_writer_and_drops_are_counted() -> None:
    reader = _StalledReader()
    before = metrics.LOG_LINES_DROPPED._value.get()
    sink = logs.Sink(reader, 1000, logs._dropped_line(True, io.StringIO()))
    line = b'{"event": "checkpoint.archived", "key": "' + b"k" * 80 + b'"}\n'
    for _ in range(200):  # 20 KB against a 1 KB queue: returns at once, nothing waits
        sink.write(line)
    dropped = metrics.LOG_LINES_DROPPED._value.get() - before
    assert 180 <= dropped < 200

    reader.moving.set()
    assert sink.wait_written(10)
    written = _lines_of(reader.written)
    assert written[-1]["event"] == "logs.dropped"
    assert written[-1]["lines"] == dropped
    assert len(written) - 1 + dropped == 200
    sink.close(1)


def test_the_queue_is_bounded_in_bytes_not_lines() -> None:
    reader = _StalledReader()
    sink = logs.Sink(reader, 10_000, logs._dropped_line(True, io.StringIO()))
    for _ in range(5):
        sink.write(b"x" * 3000 + b"\n")  # the first goes to the writer, three fit, one is dropped
    reader.moving.set()
    assert sink.wait_written(10)
    kept = [line for line in b"".join(reader.written).splitlines() if line.startswith(b"x")]
    assert len(kept) == 3
    sink.close(1)


def test_stdlib_logging_warnings_go_through_the_sink() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        stream, _ = _lines()
        logging.getLogger("asyncpg.pool").warning("connection lost")
        (line,) = _read(stream)
        assert (line["event"], line["level"]) == ("connection lost", "warning")
    finally:
        root.handlers[:] = saved
