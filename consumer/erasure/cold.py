"""An erasure's cold-tier step. The cold tier (issue 14) has not landed on this branch: the
step reports that no cold tier is configured, and `--verify` that it searched none."""

from __future__ import annotations

NOT_CONFIGURED = "no cold tier configured"


async def erase() -> dict[str, object]:
    return {"cold": NOT_CONFIGURED}


async def left() -> dict[str, object]:
    return {"cold": NOT_CONFIGURED}
