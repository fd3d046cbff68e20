"""/healthz, /readyz and /metrics: loopback by default, and half-sent requests are closed
after ARCHIVER_HTTP_TIMEOUT instead of piling up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from consumer import health, settings, web
from consumer.demo import embedded

TIMEOUT = 1.0
HALF_SENT = 200


def test_the_server_listens_on_loopback_unless_told_otherwise() -> None:
    assert settings.Settings.model_fields["http_host"].default == "127.0.0.1"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    chosen = embedded.free_port()
    runner = await web.serve(health.State(sweep_interval=60), "127.0.0.1", chosen, TIMEOUT)
    yield chosen
    await runner.cleanup()


async def half_sent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: archiver\r\nX-Slow: ")  # never finished
    await writer.drain()
    return reader, writer


async def test_half_sent_requests_are_closed_and_health_still_answers(port: int) -> None:
    connections = [await half_sent(port) for _ in range(HALF_SENT)]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status in (200, 503)
        async with asyncio.timeout(30 * TIMEOUT):  # each is closed by the server: EOF
            ends = await asyncio.gather(*(reader.read() for reader, _ in connections))
        assert all(end == b"" for end in ends)
    finally:
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in connections), return_exceptions=True)


async def test_a_byte_at_a_time_does_not_keep_a_connection(port: int) -> None:
    reader, writer = await half_sent(port)
    try:
        async with asyncio.timeout(30 * TIMEOUT):
            while True:
                writer.write(b"x")
                await writer.drain()
                if reader.at_eof() or await _closed(reader):
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed by the server while we wrote
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(TIMEOUT / 4):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
