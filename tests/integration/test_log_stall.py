"""A reader of the logs that stops reading never stops archiving: `archiver run` as a real
process whose stderr is a pipe nobody reads. Lines are dropped and counted instead, a warning
says how many once the reader is back, and SIGTERM still stops the process in time, leaving
neither its claims nor the sweep lock behind."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from ops.faults.procs import F_SETPIPE_SZ, PIPE_BYTES
from tests import servers
from tests.conftest import FAST
from tests.integration.test_archive import P, payload
from tests.waiting import eventually

SHUTDOWN_TIMEOUT = 5.0
BURST = 600  # checkpoints: about 140 KB of log lines, over the 4 KB pipe and the 64 KB queue
FAST_DUE = type(P)(ttl=15.5, archive_after=0.3)


@pytest.fixture
def unread_archiver(
    redis_url: str, database_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`archiver run` whose stderr is a pipe that nobody reads (yet)."""
    port = servers.free_port()
    env = os.environ | {f"ARCHIVER_{k.upper()}": str(v) for k, v in FAST.items()}
    env |= {
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_HEALTH_FILE": str(tmp_path / "health.json"),
        "ARCHIVER_LOG_FORMAT": "json",
        "ARCHIVER_LOG_BUFFER": "65536",
        "ARCHIVER_HTTP_PORT": str(port),
        "ARCHIVER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT}s",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    fcntl.fcntl(proc.stderr.fileno(), F_SETPIPE_SZ, PIPE_BYTES)  # fills at once when unread
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


class Reader:
    """Reads the pipe in a thread once started, until it has seen `until`."""

    def __init__(self, proc: subprocess.Popen[bytes], until: bytes) -> None:
        assert proc.stderr is not None
        self.fd = proc.stderr.fileno()
        self.until = until
        self.seen = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    async def finished(self) -> bool:
        return self.done.is_set()

    def _read(self) -> None:
        while self.until not in self.seen:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.seen += chunk
        self.done.set()


async def metric(session: aiohttp.ClientSession, port: int, name: str) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


async def dropped_beyond(session: aiohttp.ClientSession, port: int, before: float) -> float:
    """Wait until the dropped-lines counter exceeds `before`; its value then."""
    seen = [before]

    async def more() -> bool:
        seen[0] = await metric(session, port, "archiver_log_lines_dropped_total")
        return seen[0] > before

    await eventually(more, timeout=30, what="log lines dropped and counted")
    return seen[0]


async def burst(redis: aioredis.Redis, tag: str) -> None:
    for i in range(BURST):
        await FAST_DUE.write(redis, FAST_DUE.key(f"{tag}-{i}"), payload(f"{tag}-{i}", 1))


async def at_least(db: asyncpg.Connection, rows: int) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM conversation_history")) >= rows


async def test_a_stalled_log_reader_neither_stops_archiving_nor_the_shutdown(
    unread_archiver: tuple[subprocess.Popen[bytes], int],
    redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    proc, port = unread_archiver
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def ready() -> bool:
            assert proc.poll() is None, f"exited with {proc.returncode}"
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=30, what="/readyz")
        await burst(redis, "stalled")
        await eventually(lambda: at_least(db, BURST), timeout=60, what="archived, stderr unread")
        dropped = await dropped_beyond(session, port, 0.0)  # rows commit before lines are logged

        reader = Reader(proc, b'"logs.dropped"')  # the reader comes back
        reader.thread.start()
        await eventually(reader.finished, timeout=30, what="the logs.dropped warning")
        warning = next(ln for ln in reader.seen.splitlines() if b'"logs.dropped"' in ln)
        assert b'"level":"warning"' in warning

        await burst(redis, "stalled-again")  # and stops reading again: the pipe fills
        await eventually(lambda: at_least(db, 2 * BURST), timeout=60, what="archived again")
        await dropped_beyond(session, port, dropped)

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=SHUTDOWN_TIMEOUT + 10)
    assert proc.returncode == 0, "stopped cleanly, not by the watchdog or a fatal error"
    assert time.monotonic() - sent < SHUTDOWN_TIMEOUT + 10
    leftover = [k async for k in redis.scan_iter(match="archiver:claim:*")]
    assert not leftover and not await redis.exists("archiver:sweep-lock")
