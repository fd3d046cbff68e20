"""Erasure in the cold tier (a local directory and the private S3 server; Parquet and JSON lines
files, rewritten in their own format): the subject's rows
leave every file that held them (a new, verified version of the month), DuckDB finds nothing,
a restore brings nothing of the subject back (also while the erasure is still running), and a
step killed after moving its files into place is resumed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from consumer import erasure, exceptions, service, settings
from consumer.cold import export, formats, gate, layout, query, records, restore, storage, verify
from consumer.cold.storage import Storage
from tests.conftest import MakeSettings
from tests.integration.test_erasure import KEY, archive, everyone

MONTH = date(2026, 11, 1)  # the month of the messages test_erasure writes


@pytest.fixture(params=["file", "s3"])
def cold_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "file":
        return f"file://{tmp_path}/cold", None
    return request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_env")


@pytest.fixture(params=["parquet", "jsonl"])
def s(
    request: pytest.FixtureRequest, make_settings: MakeSettings, cold_url: tuple[str, str | None]
) -> settings.Settings:
    return make_settings(erasure_key=KEY, cold_url=cold_url[0], s3_endpoint_url=cold_url[1],
                         cold_format=request.param)  # fmt: skip


@pytest.fixture
def where(s: settings.Settings) -> Storage:
    assert s.cold_url is not None
    return storage.open_url(s.cold_url, s.s3_endpoint_url)


@pytest.fixture
async def parts(s: settings.Settings) -> AsyncIterator[service.Parts]:
    async with service.connected(s) as connected:
        yield connected


@pytest.fixture
async def surroundings(
    s: settings.Settings, parts: service.Parts
) -> AsyncIterator[erasure.Surroundings]:
    async with erasure.Surroundings.open(s, parts.pool) as opened:
        yield opened


def cold_customers(where: Storage) -> list[Any]:
    con = query.connect(where)
    try:
        found = con.execute(
            "SELECT DISTINCT customer_id FROM conversation_history WHERE tenant_id = 'acme'"
            " ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in found]


async def exported(parts: service.Parts, where: Storage, redis: aioredis.Redis) -> None:
    """Everyone archived, acme's month exported and verified (as the writer role), in the
    format the settings name."""
    await archive(parts, *await everyone(redis))
    async with parts.pool.acquire() as conn:
        result = await export.export_month(conn, where, "acme", MONTH, gate.limits(parts.settings))
        assert result.status == "exported"
        assert [c.ok for c in await verify.verify(conn, where, "acme")] == [True]
    assert cold_customers(where) == ["anna", "annabel", "bob"]


async def test_the_subject_leaves_the_cold_tier_and_a_restore_brings_nothing_back(
    parts: service.Parts, where: Storage, surroundings: erasure.Surroundings,
    redis: aioredis.Redis, db: asyncpg.Connection,
) -> None:  # fmt: skip
    await exported(parts, where, redis)
    async with parts.pool.acquire() as conn:
        requested = await erasure.request(conn, KEY.encode(), "acme", "customer", "anna")
    done = await erasure.run(surroundings, requested.id)
    assert (done.counts["cold_rows"], done.counts["cold_months_rewritten"]) == (4, 1)
    assert cold_customers(where) == ["annabel", "bob"]
    check = await erasure.verify(surroundings, done.id, "anna")
    assert check.ok and check.places["cold_rows"] == 0, check.places
    async with parts.pool.acquire() as conn:
        record = await records.current(conn, "acme", MONTH)
        assert record is not None and record["version"] == 2 and record["row_count"] == 4
        fmt = gate.limits(parts.settings).format
        assert formats.of_record(record) == fmt  # rewritten in its own format
        assert storage.exists(where, layout.part("acme", MONTH, 0, fmt))
        assert [c.ok for c in await verify.verify(conn, where, "acme")] == [True]
        # retention lets the month go; a restore puts back everyone but her
        await db.execute("DELETE FROM conversation_history WHERE tenant_id = 'acme'")
        await db.execute("DELETE FROM conversations WHERE tenant_id = 'acme'")
        assert await restore.restore(conn, where, "acme", MONTH) == (4, 0)
    customers = await db.fetch("SELECT DISTINCT customer_id FROM conversation_history"
                               " WHERE tenant_id = 'acme' ORDER BY 1")  # fmt: skip
    assert [r["customer_id"] for r in customers] == ["annabel", "bob"]
    assert (await erasure.verify(surroundings, done.id, "anna")).ok


async def test_a_restore_while_the_erasure_runs_skips_the_subject(
    parts: service.Parts, where: Storage, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await exported(parts, where, redis)
    async with parts.pool.acquire() as conn:
        await erasure.request(conn, KEY.encode(), "acme", "customer", "anna")  # killed here
        await db.execute("DELETE FROM conversation_history WHERE tenant_id = 'acme'")
        await db.execute("DELETE FROM conversations WHERE tenant_id = 'acme'")
        assert await restore.restore(conn, where, "acme", MONTH) == (4, 4)
    assert await db.fetchval(
        "SELECT count(*) FROM conversation_history WHERE tenant_id = 'acme' AND customer_id = 'anna'"
    ) == 0  # fmt: skip
    assert await db.fetchval(
        "SELECT count(*) FROM conversations WHERE tenant_id = 'acme' AND customer_id = 'anna'"
    ) == 0  # fmt: skip


async def test_a_cold_step_killed_after_moving_its_files_is_resumed(
    parts: service.Parts, where: Storage, surroundings: erasure.Surroundings,
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await exported(parts, where, redis)
    async with parts.pool.acquire() as conn:
        requested = await erasure.request(conn, KEY.encode(), "acme", "user", "u-bob")

    async def killed(*args: Any) -> None:
        raise exceptions.ArchiverError("killed before recording")

    with monkeypatch.context() as patched:
        patched.setattr(export, "_record", killed)
        with pytest.raises(exceptions.ArchiverError):
            await erasure.run(surroundings, requested.id)
    assert cold_customers(where) == ["anna", "annabel"]  # the new files are in place
    async with parts.pool.acquire() as conn:
        assert [c.ok for c in await verify.verify(conn, where, "acme")] == [False]
    done = await erasure.run(surroundings, requested.id)  # --resume: adopts the files
    assert done.status == "completed"
    async with parts.pool.acquire() as conn:
        assert [c.ok for c in await verify.verify(conn, where, "acme")] == [True]
    assert (await erasure.verify(surroundings, done.id, "u-bob")).ok
