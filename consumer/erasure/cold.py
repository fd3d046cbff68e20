"""An erasure's cold-tier step (consumer/cold/): every current file of the subject's tenant that
holds a row of the subject (stamped at or before requested_at) is rewritten without those
rows, as a new version of its month in the format of the current one (Parquet or JSON lines,
consumer/cold/formats.py): new files written under a staging name, moved over the
old ones (on S3 a copy then a delete: the old object is gone), a new manifest, the new
archived_partitions row (the previous version stops being current) and verify run on it, all
under the month's export lock. Months without a row of the subject are left as they are.

Idempotent: a rewritten month holds nothing of the subject, so a resumed step skips it. Killed
between moving the new files into place and recording them, the month's record names the old
version while its directory holds the new files: the step, run again, finds the record failing
verify and files without the subject, and records those files as the new version (adopts
them). `left` counts what is left through DuckDB (`archiver erase --verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from consumer import exceptions, jobs, queries
from consumer.cold import digest, export, files, formats, layout, query, records, storage, verify
from consumer.cold.storage import Storage
from consumer.erasure import subjects
from consumer.settings import Settings

log = structlog.get_logger("consumer.erasure.cold")

NOT_CONFIGURED = "no cold tier configured"
BATCH = 65_536  # rows read at a time
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ColdBusyError(exceptions.ArchiverError):
    """A month of the cold tier is being exported meanwhile: the erasure's cold step is
    retried (resume the erasure, or the `erasure` job does)."""


def configured(s: Settings) -> Storage | None:
    return None if s.cold_url is None else storage.open_url(s.cold_url, s.s3_endpoint_url)


async def erase(conn: Any, s: Settings, subject: subjects.Subject) -> dict[str, Any]:
    """Rewrite every month of the subject's tenant holding its rows; counts."""
    where = configured(s)
    if where is None:
        return {"cold": NOT_CONFIGURED}
    removed = months = 0
    for record in await records.listing(conn, subject.tenant):
        if record["min_timestamp"] is not None and record["min_timestamp"] > subject.requested_at:
            continue
        gone = await _rewrite(conn, where, subject, record)
        removed += gone
        months += gone > 0
    return {"cold_rows": removed, "cold_months_rewritten": months}


async def left(s: Settings, subject: subjects.Subject) -> dict[str, Any]:
    """Rows of the subject in the cold tier's current files, counted by DuckDB in place."""
    where = configured(s)
    if where is None:
        return {"cold": NOT_CONFIGURED}
    return {"cold_rows": await asyncio.to_thread(_count, where, subject)}


def _count(where: Storage, subject: subjects.Subject) -> int:
    con = query.connect(where)
    try:
        customer, user = _ids(subject)
        row = con.execute(
            queries.get("erasure_cold_left"),
            [
                subject.tenant,
                subject.requested_at,
                customer,
                user,
                sorted(subject.conversation_ids),
            ],
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def _ids(subject: subjects.Subject) -> tuple[str | None, str | None]:
    customer = subject.id if subject.kind == "customer" else None
    return customer, subject.id if subject.kind == "user" else None


def _mask(batch: pa.RecordBatch | pa.Table, subject: subjects.Subject) -> pa.Array:
    """True for the subject's rows stamped at or before requested_at."""
    customer, user = _ids(subject)
    mine = pc.is_in(batch.column("conversation_id"), pa.array(sorted(subject.conversation_ids),
                                                               pa.string()))  # fmt: skip
    if customer is not None:
        mine = pc.or_kleene(mine, pc.equal(batch.column("customer_id"), customer))
    if user is not None:
        mine = pc.or_kleene(mine, pc.equal(batch.column("user_id"), user))
    early = pc.less_equal(batch.column("timestamp"), pa.scalar(subject.requested_at,
                                                                export.UTC_MICROS))  # fmt: skip
    return pc.fill_null(pc.and_kleene(mine, early), False)


def _holds(where: Storage, subject: subjects.Subject, record: Any) -> bool:
    fmt = formats.of_record(record)
    for path in layout.parts(record):
        with contextlib.closing(files.batches(where, path, fmt, BATCH)) as batches:
            if any(pc.any(_mask(batch, subject)).as_py() for batch in batches):
                return True
    return False


async def _rewrite(conn: Any, where: Storage, subject: subjects.Subject, record: Any) -> int:
    if not await asyncio.to_thread(_holds, where, subject, record):
        if await asyncio.to_thread(verify.problem_of, where, record) is not None:
            await _adopt(conn, where, subject, record)
        return 0
    tenant, month = record["tenant_id"], record["month"]
    async with conn.transaction():
        if not await conn.fetchval(queries.get("cold_lock_month"), tenant, month):
            raise ColdBusyError()
        current = jobs.one(await records.current(conn, tenant, month))
        export_id = uuid.uuid4().hex
        done = await asyncio.to_thread(_write, where, subject, current, export_id)
        written, stats, fmt = done.written, done.stats, formats.of_record(current)
        await asyncio.to_thread(export._publish, where, tenant, month, export_id, written, fmt)
        version = current["version"] + 1
        manifest = export._manifest(tenant, month, export_id, version, current, stats, written,
                                    fmt)  # fmt: skip
        await asyncio.to_thread(storage.write_bytes, where, layout.manifest(export_id), manifest)
        await export._record(conn, where, tenant, month, export_id, version, stats, written, fmt)
    fresh = jobs.one(await records.current(conn, tenant, month))
    await verify.ensure(conn, where, fresh)
    log.info("erasure.cold_rewritten", month=layout.month_text(month), version=version,
             rows_removed=done.removed)  # fmt: skip
    return done.removed


async def _adopt(conn: Any, where: Storage, subject: subjects.Subject, record: Any) -> None:
    """A step killed after its files were moved into place, before they were recorded: record
    them (their rows hold nothing of the subject) as the month's new version, if they verify
    as such; any other mismatch is left to `archiver cold verify` and the `cold` job."""
    tenant, month = record["tenant_id"], record["month"]
    async with conn.transaction():
        if not await conn.fetchval(queries.get("cold_lock_month"), tenant, month):
            raise ColdBusyError()
        current = jobs.one(await records.current(conn, tenant, month))
        export_id = uuid.uuid4().hex
        done = await asyncio.to_thread(_write, where, subject, current, export_id)
        if done.removed:  # not ours to adopt: the files changed some other way
            await asyncio.to_thread(storage.remove_tree, where, layout.staging_dir(tenant, month))
            return
        fmt = formats.of_record(current)
        await asyncio.to_thread(export._publish, where, tenant, month, export_id, done.written,
                                fmt)  # fmt: skip
        version = current["version"] + 1
        manifest = export._manifest(tenant, month, export_id, version, current, done.stats,
                                    done.written, fmt)  # fmt: skip
        await asyncio.to_thread(storage.write_bytes, where, layout.manifest(export_id), manifest)
        await export._record(conn, where, tenant, month, export_id, version, done.stats,
                             done.written, fmt)  # fmt: skip
    await verify.ensure(conn, where, jobs.one(await records.current(conn, tenant, month)))


@dataclass(frozen=True, slots=True)
class _Done:
    written: list[export.Written]
    stats: records.Stats
    removed: int


def _write(where: Storage, subject: subjects.Subject, record: Any, export_id: str) -> _Done:
    """Each part again without the subject's rows, staged (blocking: run in a thread)."""
    written, total, rows, removed = [], 0, 0, 0
    low: Any = None
    high: Any = None
    tenant, month, fmt = record["tenant_id"], record["month"], formats.of_record(record)
    for n, path in enumerate(layout.parts(record)):
        staged = layout.staged_part(tenant, month, export_id, n, fmt)
        storage.make_dirs(where, staged.rsplit("/", 1)[0])
        sink = export.HashingSink(storage.write_stream(where, staged))
        part_rows, part_low, part_high = 0, None, None
        out = files.writer(sink, fmt)
        for batch in files.batches(where, path, fmt, BATCH):
            kept = batch.filter(pc.invert(_mask(batch, subject)))
            removed += batch.num_rows - kept.num_rows
            if kept.num_rows == 0:
                continue
            out.write(pa.Table.from_batches([kept], schema=export.SCHEMA))
            total += digest.of_batch(kept)
            part_rows += kept.num_rows
            span = pc.min_max(kept.column("timestamp"))
            part_low = _least(part_low, span["min"].as_py())
            part_high = _most(part_high, span["max"].as_py())
        out.close()
        rows += part_rows
        low, high = _least(low, part_low), _most(high, part_high)
        written.append(export.Written(
            layout.part(tenant, month, n, fmt), sink.sha256.hexdigest(), sink.size, part_rows,
            _micros(part_low), _micros(part_high),
        ))  # fmt: skip
    return _Done(written, records.Stats(rows, str(total), low, high), removed)


def _least(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _most(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _micros(moment: Any) -> int | None:
    if moment is None:
        return None
    return int((moment - EPOCH) // timedelta(microseconds=1))
