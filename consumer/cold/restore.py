"""Restore a tenant's month from its current export: rows back into conversation_history.

The files are verified first (restore never reads rows from a file that fails its checks),
then read a batch at a time and copied into a temporary table; the rows not in
conversation_history (by identity: tenant, conversation, message key, time) go back, with
archived_at as exported and their conversations' rows (created again if retention removed
them); rows still there are skipped, so a restore can be repeated. New rows get new ids.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Generator
from datetime import date

import asyncpg
import pyarrow as pa
import pyarrow.csv as pacsv
import structlog

from consumer import exceptions, jobs, queries
from consumer.cold import files, formats, layout, records, verify
from consumer.cold.storage import Storage

log = structlog.get_logger("consumer.cold.restore")

BATCH = 20_000
COLUMNS = ["customer_id", "user_id", "conversation_id", "timestamp_us", "message_role",
           "message_content", "metadata", "message_key", "source_key", "archived_at_us"]  # fmt: skip


async def restore(
    conn: jobs.Connection, where: Storage, tenant: str, month: date
) -> tuple[int, int]:
    """(rows put back, rows skipped because they were still there)."""
    record = await records.current(conn, tenant, month)
    if record is None:
        raise exceptions.NotFoundError(f"no export of {layout.month_text(month)} for that tenant")
    inserted = await restore_record(conn, where, record)
    return inserted, record["row_count"] - inserted


async def restore_record(conn: jobs.Connection, where: Storage, record: asyncpg.Record) -> int:
    await verify.ensure(conn, where, record, strays=False)  # reads only the version's files
    lower, _ = records.bounds(record["month"])
    await conn.fetchval(queries.get("ensure_partition"), lower)
    inserted = 0
    fmt = formats.of_record(record)
    for path in layout.parts(record):
        batches = _Batches(where, path, fmt)
        try:
            while (csv := await asyncio.to_thread(batches.next_csv)) is not None:
                inserted += await _insert(conn, record["tenant_id"], csv)
        finally:
            await asyncio.to_thread(batches.close)
    log.info("cold.restored", month=layout.month_text(record["month"]), rows=inserted)
    return inserted


async def _insert(conn: jobs.Connection, tenant: str, csv: bytes) -> int:
    async with conn.transaction():
        await conn.execute(queries.get("cold_restore_staging"))
        await conn.copy_to_table(
            "archiver_cold_restore", source=io.BytesIO(csv), columns=COLUMNS, format="csv"
        )
        count: int = await conn.fetchval(queries.get("cold_restore_insert"), tenant)
    return count


class _Batches:
    """A part file's rows as CSV for COPY, BATCH rows at a time (in a thread)."""

    def __init__(self, where: Storage, path: str, fmt: formats.Format) -> None:
        self._batches: Generator[pa.RecordBatch, None, None] = files.batches(
            where, path, fmt, BATCH
        )

    def next_csv(self) -> bytes | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        out = io.BytesIO()
        options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
        pacsv.write_csv(_for_copy(batch), out, options)
        return out.getvalue()

    def close(self) -> None:
        self._batches.close()


def _for_copy(batch: pa.RecordBatch) -> pa.Table:
    arrays = []
    for name in COLUMNS:
        if name.endswith("_us"):
            arrays.append(batch.column(name.removesuffix("_us")).cast(pa.int64()))
        else:
            arrays.append(batch.column(name))
    return pa.Table.from_arrays(arrays, names=COLUMNS)
