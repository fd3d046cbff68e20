"""The cold tier as an operator drives it: `archiver cold ...` in a subprocess, against the
private S3 server (moto) and a local directory; and a kill -9 in the middle of an export."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from consumer.cold import layout
from ops import seed
from tests import s3server
from tests.acceptance.test_cli import archiver, env
from tests.waiting import eventually

__all__ = ["env"]  # the fixture, used by name


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


async def a_past_month(db: asyncpg.Connection, shape: seed.Shape) -> str:
    now: datetime = await db.fetchval("SELECT now()")
    await seed.load(db, shape, now)
    first = now.replace(day=1) - timedelta(days=40)
    return first.strftime("%Y-%m")


async def test_export_verify_ls_query_restore_on_s3(
    env: dict[str, str], db: asyncpg.Connection, s3_bucket: str, s3_env: str
) -> None:
    month = await a_past_month(db, seed.Shape(tenants=("acme",), months=3, rows=900))
    cold = env | {"ARCHIVER_COLD_URL": s3_bucket, "ARCHIVER_S3_ENDPOINT_URL": s3_env,
                  "AWS_ACCESS_KEY_ID": s3server.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": s3server.SECRET_KEY,
                  "AWS_REGION": s3server.REGION}  # fmt: skip
    usage = archiver(cold, "cold", "export")
    assert usage.returncode == 2 and "--month" in usage.stderr
    exported = json_of(archiver(cold, "cold", "export", "--month", month, "--json"))
    assert exported["exported"] == 1 and exported["failed_verify"] == 0
    rows = exported["items"][0]["rows"]
    pg = await db.fetchval(
        "SELECT count(*) FROM conversation_history WHERE tenant_id = 'acme'"
        " AND to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM') = $1", month,
    )  # fmt: skip
    assert rows == pg > 0
    listed = json_of(archiver(cold, "cold", "ls", "--json"))
    assert [(i["tenant"], i["month"], i["rows"]) for i in listed["items"]] == [
        ("acme", month, rows)
    ]
    assert json_of(archiver(cold, "cold", "verify", "--json"))["items"][0]["ok"] is True
    sql = f"SELECT count(*) AS n FROM conversation_history WHERE month = '{month}'"
    assert json_of(archiver(cold, "cold", "query", sql, "--json"))["items"] == [{"n": rows}]
    text = archiver(
        cold, "cold", "query", "SELECT message_content FROM conversation_history LIMIT 3"
    )
    assert text.returncode == 0 and "lorem" in text.stdout
    bad = archiver(cold, "cold", "query", "SELEC nonsense")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    await db.execute("DELETE FROM conversation_history WHERE tenant_id = 'acme'")
    restored = json_of(
        archiver(cold, "cold", "restore", "--tenant", "acme", "--month", month, "--json")
    )
    assert (restored["restored"], restored["skipped"]) == (rows, 0)
    # the same month as gzip JSON lines: a new version, listed with its format, queried alike
    as_jsonl = cold | {"ARCHIVER_COLD_FORMAT": "jsonl", "ARCHIVER_COLD_COMPRESSION": "gzip"}
    again = json_of(archiver(as_jsonl, "cold", "export", "--month", month, "--json"))
    assert (again["items"][0]["status"], again["items"][0]["version"]) == ("exported", 2)
    assert again["failed_verify"] == 0
    listed = json_of(archiver(cold, "cold", "ls", "--json"))
    assert [(i["format"], i["compression"], i["version"]) for i in listed["items"]] == [
        ("jsonl", "gzip", 2)
    ]
    assert "jsonl" in archiver(cold, "cold", "ls").stdout
    assert json_of(archiver(cold, "cold", "query", sql, "--json"))["items"] == [{"n": rows}]
    wrong = archiver(cold | {"ARCHIVER_COLD_COMPRESSION": "gzip"}, "cold", "ls")
    assert wrong.returncode != 0 and "ARCHIVER_COLD_COMPRESSION" in wrong.stderr
    down = archiver(cold | {"ARCHIVER_S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "cold", "verify")
    assert (
        down.returncode == 1
        and "ARCHIVER_COLD_URL" in down.stderr
        and "Traceback" not in down.stderr
    )


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
async def test_a_kill_mid_export_leaves_nothing_half_visible(
    env: dict[str, str], db: asyncpg.Connection, tmp_path: Path, fmt: str
) -> None:
    """SIGKILL while the file is being written: no file under a final name, no record; the
    next run exports, verifies and clears the staged leftovers (in each format)."""
    month = await a_past_month(db, seed.Shape(tenants=("acme",), months=3, rows=100_000, chars=300))
    root = tmp_path / "cold"
    cold = env | {"ARCHIVER_COLD_URL": f"file://{root}", "ARCHIVER_COLD_GROUP_BYTES": "1048576",
                  "ARCHIVER_COLD_FORMAT": fmt}  # fmt: skip
    staging = root / layout.STAGING
    pattern = "*.parquet" if fmt == "parquet" else "*.jsonl.zst"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumer", "cold", "export", "--month", month,
        env=cold, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def writing() -> bool:
            return any(p.stat().st_size > 0 for p in staging.rglob(pattern))

        await eventually(writing, timeout=60, what="the export to be writing its staged file")
        proc.send_signal(signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    assert not list((root / layout.TABLE).rglob("part-*"))
    assert await db.fetchval("SELECT count(*) FROM archived_partitions") == 0
    done = json_of(archiver(cold, "cold", "export", "--month", month, "--json", timeout=120))
    assert done["exported"] == 1 and done["failed_verify"] == 0
    assert not list(staging.rglob("part-*"))
    assert len(list((root / layout.TABLE).rglob(pattern))) == 1
