"""SIGTERM ends `archiver run` within ARCHIVER_SHUTDOWN_TIMEOUT even when its shutdown is stuck:
the first signal arms a watchdog that exits the process with EX_SOFTWARE."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from consumer import service

STUCK = """
import asyncio, time
from consumer import service

async def main():
    stopping = asyncio.Event()
    with service.on_stop(stopping, exit_within=1.0):
        print("ready", flush=True)
        await stopping.wait()
        time.sleep(60)  # a shutdown stuck where no cancellation reaches

asyncio.run(main())
"""


def test_a_stuck_shutdown_is_ended_by_the_watchdog() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == service.FORCED_EXIT_CODE
        assert time.monotonic() - sent < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
