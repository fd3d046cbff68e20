"""The JSON report and the printed table."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ops.faults.runner import Result

COLUMNS = (
    ("scenario", 16), ("written", 8), ("archived", 8), ("dead-lt", 7), ("lost", 5),
    ("dup", 4), ("pending", 7), ("expired", 7), ("work-dup", 8), ("secs", 6), ("result", 6),
)  # fmt: skip


def document(
    results: Sequence[Result], *, seed: int, quick: bool, seconds: float
) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "seed": seed,
        "quick": quick,
        "seconds": round(seconds, 1),
        "passed": bool(results) and all(r.passed for r in results),
        "scenarios": {r.name: r.as_dict() for r in results},
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


def _cells(r: Result) -> list[str]:
    v = r.verdict
    return [
        r.name, str(v.written_messages), str(v.archived_messages),
        str(v.dead_lettered_checkpoints), str(v.lost), str(v.duplicated), str(v.pending),
        str(r.expired_unarchived), str(r.archive_work.get("duplicate_work", "-")),
        f"{r.seconds:.0f}", "PASS" if r.passed else "FAIL",
    ]  # fmt: skip


def table(results: Sequence[Result]) -> str:
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append("  ".join("-" * width for _, width in COLUMNS))
    for r in results:
        cells = _cells(r)
        lines.append("  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
        failed = [name for name, ok in r.checks.items() if not ok]
        if r.error or failed:
            lines.append(
                f"    ! {r.error.splitlines()[0] if r.error else ''} failed checks: {failed}"
            )
    return "\n".join(lines)
