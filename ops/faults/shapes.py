"""The shapes every scenario starts from: scaled-down windows and workload mixes."""

from __future__ import annotations

import dataclasses
from typing import Any

from ops.faults.config import Windows
from ops.faults.runner import Run
from ops.faults.workload import Mix

FULL = Windows()  # ttl 20 s, archive after 10 s, sweep every 5 s
QUICK = Windows(
    ttl=10.0, archive_after=4.0, sweep_interval=3.0, claim_ttl=3.0, sweep_lease=6.0,
    db_timeout=1.5, redis_timeout=1.5, db_retry_delay=0.3,
)  # fmt: skip
HANG_S = {False: 10.0, True: 5.0}
MB = 1024


def windows(quick: bool, **changes: float | int) -> Windows:
    return (QUICK if quick else FULL).but(**changes)


def mix(quick: bool, **changes: Any) -> Mix:
    if quick:
        base = Mix(conversations=60, checkpoints=(2, 4), duration=8.0)
    else:
        base = Mix(conversations=400, checkpoints=(2, 6), duration=30.0)
    return dataclasses.replace(base, **changes)


def due_soon(run: Run) -> float:
    """Seconds until checkpoints written at the start of the burst come due."""
    return run.windows.archive_after + 1.0
