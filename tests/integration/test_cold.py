"""The cold tier against real storage: a local directory and a private S3 API server (moto),
in each format (Parquet; JSON lines, zstd and gzip).

A month goes from PostgreSQL to the files and back without a difference; DuckDB reads the files
in place and returns what PostgreSQL had; verify catches a corrupted, truncated or missing
file; an export is idempotent, a changed month gets a new version; an S3 outage in the middle
of an export leaves nothing half-visible and the next run completes; a month can change format
(a new version) and months in different formats are queried as one table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import orjson
import pytest
from pyarrow import fs

from consumer.cold import (
    export,
    files,
    formats,
    gate,
    layout,
    query,
    records,
    restore,
    storage,
    verify,
)
from consumer.cold.formats import Format
from consumer.cold.storage import Storage
from tests import s3server

TENANT = "acme"
MONTH = date(2026, 1, 1)
COMPARED = ("customer_id", "user_id", "conversation_id", "timestamp", "message_role",
            "message_content", "metadata", "message_key", "source_key", "archived_at")  # fmt: skip
# Contents that a CSV or Parquet round trip could get wrong.
AWKWARD = ["plain", "", 'line\nbreak, "quoted"', "tab\tand\r\ncrlf", "ünïcödé ✓ 🚀", "\\N", "NULL"]


async def seed(db: asyncpg.Connection, tenant: str = TENANT, month: date = MONTH, n: int = 40,
               key_prefix: str = "m") -> None:  # fmt: skip
    """`n` messages of a tenant in a month (three conversations), with awkward contents."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    await db.execute("SELECT archiver_ensure_partition($1)", start)
    rows = [
        (tenant, None if i % 3 else f"cust-{i % 2}", None if i % 5 == 0 else "user-1",
         f"conv-{i % 3}", start.replace(day=1 + i % 27, microsecond=i * 7),
         ("user", "assistant", "tool")[i % 3], AWKWARD[i % len(AWKWARD)],
         orjson.dumps({"i": i, "text": AWKWARD[i % len(AWKWARD)]}).decode(),
         f"{key_prefix}{i}", f"src:{i}")
        for i in range(n)
    ]  # fmt: skip
    await db.executemany(
        """INSERT INTO conversation_history (tenant_id, customer_id, user_id, conversation_id,
               "timestamp", message_role, message_content, metadata, message_key, source_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)""",
        rows,
    )


async def pg_rows(db: asyncpg.Connection, tenant: str = TENANT) -> set[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT customer_id, user_id, conversation_id, \"timestamp\", message_role,"
        " message_content, metadata::text AS metadata, message_key, source_key, archived_at"
        " FROM conversation_history WHERE tenant_id = $1", tenant,
    )  # fmt: skip
    return {_normal(dict(r)) for r in rows}


def _normal(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_json(row[k]) if k == "metadata" else row[k] for k in COMPARED)


def _json(text: str) -> bytes:
    return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)


def duck_rows(where: Storage, tenant: str = TENANT) -> set[tuple[Any, ...]]:
    columns = ", ".join(f'"{c}"' for c in COMPARED)
    con = query.connect(where)
    try:
        cursor = con.execute(
            f"SELECT {columns} FROM conversation_history WHERE tenant_id = ?", [tenant]
        )
        names = [d[0] for d in cursor.description or []]
        return {_normal(dict(zip(names, row, strict=True))) for row in cursor.fetchall()}
    finally:
        con.close()


def native_duck_rows(
    where: Storage, fmt: Format = formats.PARQUET, tenant: str = TENANT
) -> set[tuple[Any, ...]]:
    """DuckDB's own Parquet or JSON reader over the layout, Hive partitioning on."""
    columns = ", ".join(f'"{c}"' for c in COMPARED)
    paths = where.path(layout.glob(fmt))
    reader = "read_parquet" if fmt.name == "parquet" else "read_json"
    found = duckdb.sql(
        f"SELECT {columns} FROM {reader}('{paths}', hive_partitioning = true)"
        f" WHERE tenant_id = '{tenant}'"
    )
    assert found is not None
    return {_normal(dict(zip(found.columns, row, strict=True))) for row in found.fetchall()}


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """The cold tier on a local directory, then on the private S3 server."""
    if request.param == "file":
        return storage.open_url(f"file://{tmp_path}/cold")
    bucket: str = request.getfixturevalue("s3_bucket")
    return storage.open_url(bucket, request.getfixturevalue("s3_env"))


@pytest.fixture(params=formats.EVERY, ids=lambda f: f.label)
def fmt(request: pytest.FixtureRequest) -> Format:
    """Each format of the files."""
    chosen: Format = request.param
    return chosen


def limits_of(fmt: Format) -> export.Limits:
    return export.Limits(format=fmt)


async def test_round_trip_and_duckdb(
    db: asyncpg.Connection, database_url: str, where: Storage, fmt: Format
) -> None:
    """Export (as the archiver's role), verify, query in place, lose the rows, restore."""
    await seed(db)
    await seed(db, tenant="other", n=5)
    before = await pg_rows(db)
    conn = await asyncpg.connect(database_url)
    try:
        result = await export.export_month(conn, where, TENANT, MONTH, limits_of(fmt))
        assert (result.status, result.version, result.rows, result.files) == ("exported", 1, 40, 1)
        record = await records.current(conn, TENANT, MONTH)
        assert record is not None and formats.of_record(record) == fmt
        assert storage.exists(where, layout.part(TENANT, MONTH, 0, fmt))
        checked = await verify.verify(conn, where, TENANT)
        assert [c.ok for c in checked] == [True]
        assert duck_rows(where) == before
        if where.url.startswith("file://"):  # any engine reads the layout itself
            assert native_duck_rows(where, fmt) == before
        again = await export.export_month(conn, where, TENANT, MONTH, limits_of(fmt))
        assert again.status == "unchanged"
        await db.execute("DELETE FROM conversation_history WHERE tenant_id = $1", TENANT)
        await db.execute("DELETE FROM conversations WHERE tenant_id = $1", TENANT)
        assert await restore.restore(conn, where, TENANT, MONTH) == (40, 0)
        assert await pg_rows(db) == before
        assert await restore.restore(conn, where, TENANT, MONTH) == (0, 40)
        assert (
            await db.fetchval("SELECT count(*) FROM conversations WHERE tenant_id = $1", TENANT)
            == 3
        )
    finally:
        await conn.close()
    manifest = orjson.loads(storage.read_bytes(where, layout.manifest(result.export_id or "")))
    assert (manifest["rows"], manifest["current"], manifest["files"][0]["rows"]) == (40, True, 40)
    assert (manifest["format"], manifest["compression"]) == (fmt.name, fmt.compression)
    assert manifest["files"][0]["path"].endswith(fmt.suffix)


async def test_a_format_change_is_a_new_version_and_formats_mix(
    db: asyncpg.Connection, database_url: str, where: Storage
) -> None:
    """A month exported as Parquet, then as JSON lines: version 2, its Parquet file gone; a
    month of another tenant stays Parquet, one more is gzip JSON lines: DuckDB's view holds
    every row once; verify and restore read each version in its own format."""
    jsonl, gz = formats.of_name("jsonl.zst"), formats.of_name("jsonl.gz")
    await seed(db, n=12)
    await seed(db, tenant="other", n=5)
    await seed(db, tenant="third", n=7)
    conn = await asyncpg.connect(database_url)
    try:
        await export.export_month(conn, where, TENANT, MONTH)
        await export.export_month(conn, where, "other", MONTH)
        await export.export_month(conn, where, "third", MONTH, limits_of(gz))
        second = await export.export_month(conn, where, TENANT, MONTH, limits_of(jsonl))
        assert (second.status, second.version, second.rows) == ("exported", 2, 12)
        again = await export.export_month(conn, where, TENANT, MONTH, limits_of(jsonl))
        assert again.status == "unchanged"
        assert not storage.exists(where, layout.part(TENANT, MONTH, 0))
        assert storage.exists(where, layout.part(TENANT, MONTH, 0, jsonl))
        assert [c.ok for c in await verify.verify(conn, where)] == [True, True, True]
        listed = {r["tenant_id"]: formats.of_record(r) for r in await records.listing(conn)}
        assert listed == {TENANT: jsonl, "other": formats.PARQUET, "third": gz}
        for tenant in (TENANT, "other", "third"):
            assert duck_rows(where, tenant) == await pg_rows(db, tenant)
        tenants = (TENANT, "other", "third")
        before = [await pg_rows(db, tenant) for tenant in tenants]
        await db.execute("DELETE FROM conversation_history")
        for tenant in tenants:
            await restore.restore(conn, where, tenant, MONTH)
        assert [await pg_rows(db, tenant) for tenant in tenants] == before
    finally:
        await conn.close()


async def test_late_rows_make_a_new_version(
    db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    """Rows arriving after the export (and after retention removed the exported ones): the
    next export holds both, as version 2, the current one."""
    where = storage.open_url(f"file://{tmp_path}/cold")
    await seed(db, n=10)
    conn = await asyncpg.connect(database_url)
    try:
        first = await export.export_month(conn, where, TENANT, MONTH)
        await db.execute("DELETE FROM conversation_history WHERE tenant_id = $1", TENANT)
        assert (await export.export_month(conn, where, TENANT, MONTH)).status == "unchanged"
        await seed(db, n=3, key_prefix="late")
        second = await export.export_month(conn, where, TENANT, MONTH)
        assert (second.status, second.version, second.rows, second.restored) == (
            "exported",
            2,
            13,
            10,
        )
        listed = await records.listing(conn, TENANT, every=True)
        assert [(r["version"], r["is_current"]) for r in listed] == [(1, False), (2, True)]
        assert [c.ok for c in await verify.verify(conn, where)] == [True]
    finally:
        await conn.close()
    manifest = orjson.loads(storage.read_bytes(where, layout.manifest(second.export_id or "")))
    assert (manifest["version"], manifest["supersedes"]) == (2, first.export_id)


async def test_a_file_the_export_does_not_name_fails_verify_until_exported_again(
    db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    """A format change stopped between moving its new files in and removing the old: the old
    version's files are intact but the query view would read both, so verify says so; the
    next export (in the new format) records the new files and removes the old."""
    where = storage.open_url(f"file://{tmp_path}/cold")
    jsonl = formats.of_name("jsonl.zst")
    await seed(db, n=10)
    conn = await asyncpg.connect(database_url)
    try:
        await export.export_month(conn, where, TENANT, MONTH)
        folder = tmp_path / "cold" / layout.month_dir(TENANT, MONTH)
        (folder / layout.part_name(0, jsonl)).write_bytes(b"left by a killed export")
        (checked,) = await verify.verify(conn, where)
        assert not checked.ok and "part-0.jsonl.zst" in (checked.problem or "")
        done = await export.export_month(conn, where, TENANT, MONTH, limits_of(jsonl))
        assert (done.status, done.version) == ("exported", 2)
        assert sorted(p.name for p in folder.iterdir()) == ["part-0.jsonl.zst"]
        assert [c.ok for c in await verify.verify(conn, where)] == [True]
        assert duck_rows(where) == await pg_rows(db)
    finally:
        await conn.close()


async def test_an_unchanged_month_never_verified_is_verified_by_the_next_export(
    db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    """An export killed after recording its version, before verifying it: the next export
    run (the `cold` job, retention's gate, `archiver cold export`) verifies it."""
    where = storage.open_url(f"file://{tmp_path}/cold")
    await seed(db, n=10)
    conn = await asyncpg.connect(database_url)
    try:
        await export.export_month(conn, where, TENANT, MONTH)  # recorded, not verified
        result, checked = await gate.exported_and_verified(
            conn, where, TENANT, MONTH, export.Limits()
        )
        assert result.status == "unchanged" and checked is not None and checked.ok
        record = await records.current(conn, TENANT, MONTH)
        assert record is not None and record["verified_at"] is not None
        again = await gate.exported_and_verified(conn, where, TENANT, MONTH, export.Limits())
        assert again[1] is None  # verified and unchanged: nothing read again
    finally:
        await conn.close()


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage", [_corrupt, _truncate, Path.unlink], ids=["corrupted", "truncated", "missing"]
)
async def test_verify_catches_a_damaged_file(
    db: asyncpg.Connection, database_url: str, tmp_path: Path, damage: Callable[[Path], None],
    fmt: Format,
) -> None:  # fmt: skip
    where = storage.open_url(f"file://{tmp_path}/cold")
    await seed(db, n=10)
    conn = await asyncpg.connect(database_url)
    try:
        await export.export_month(conn, where, TENANT, MONTH, limits_of(fmt))
        assert [c.ok for c in await verify.verify(conn, where)] == [True]
        damage(tmp_path / "cold" / layout.part(TENANT, MONTH, 0, fmt))
        (checked,) = await verify.verify(conn, where)
        assert not checked.ok and checked.problem
        record = await records.current(conn, TENANT, MONTH)
        assert record is not None and record["verified_at"] is None and record["verify_error"]
        with pytest.raises(verify.VerifyError):
            await restore.restore(conn, where, TENANT, MONTH)
    finally:
        await conn.close()


@pytest.mark.parametrize("fmt", [formats.PARQUET, formats.of_name("jsonl.zst")],
                         ids=lambda f: f.label)  # fmt: skip
async def test_s3_outage_mid_export_leaves_nothing_half_visible(
    db: asyncpg.Connection, database_url: str, s3_server: s3server.MotoServer, s3_bucket: str,
    s3_env: str, monkeypatch: pytest.MonkeyPatch, fmt: Format,
) -> None:  # fmt: skip
    """S3 stops answering once the files are staged: the export fails, no file is under its
    final name and no record names one; S3 back, the next run completes and cleans up."""
    monkeypatch.setattr(storage, "S3_TIMEOUT_S", 1.0)
    monkeypatch.setattr(storage, "S3_RETRIES", 1)
    where = storage.open_url(s3_bucket, s3_env)
    await seed(db, n=10)
    publish = export._publish

    def outage(*args: Any) -> None:
        s3_server.pause()
        publish(*args)

    monkeypatch.setattr(export, "_publish", outage)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(OSError, match="AWS Error"):
            await export.export_month(conn, where, TENANT, MONTH, limits_of(fmt))
        s3_server.resume()
        assert await records.current(conn, TENANT, MONTH) is None
        # A copy sent before the outage may still land after it: then whole, never partial.
        assert _rows_under_final_names(where, fmt) in (0, 10)
        monkeypatch.setattr(export, "_publish", publish)
        done = await export.export_month(conn, where, TENANT, MONTH, limits_of(fmt))
        assert done.status == "exported"
        assert [c.ok for c in await verify.verify(conn, where)] == [True]
        assert _files_under(where, layout.staging_dir(TENANT, MONTH)) == []
        assert _rows_under_final_names(where, fmt) == 10
    finally:
        s3_server.resume()
        await conn.close()


def _rows_under_final_names(where: Storage, fmt: Format) -> int:
    """Rows in the files under the month's directory (every one must be a whole file)."""
    rows = 0
    for path in _files_under(where, layout.month_dir(TENANT, MONTH)):
        relative = path.removeprefix(f"{where.base}/")
        rows += sum(b.num_rows for b in files.batches(where, relative, fmt, 10_000))
    return rows


def _files_under(where: Storage, relative: str) -> list[str]:
    selector = fs.FileSelector(where.path(relative), allow_not_found=True, recursive=True)
    found = where.filesystem.get_file_info(selector)
    return [info.path for info in found if info.type == fs.FileType.File]
