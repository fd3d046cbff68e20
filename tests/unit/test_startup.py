from __future__ import annotations

import subprocess
import sys

# What only some commands need: the cold tier (pyarrow, DuckDB) and the History API (FastAPI,
# uvicorn). `archiver sweep` from cron, `archiver check` in a container health check and every
# other command start without them (half the memory, a fraction of the start-up time).
HEAVY = ("pyarrow", "duckdb", "fastapi", "uvicorn", "starlette")


def test_the_command_line_starts_without_the_cold_tier_or_the_api_libraries() -> None:
    probe = (
        "import sys, consumer.cli.main, consumer.service\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
