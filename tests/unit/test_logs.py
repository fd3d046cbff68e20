"""JSON log lines: one object per event, and logging never fails on an odd value."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from consumer import logs


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
    stream.flush()
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
