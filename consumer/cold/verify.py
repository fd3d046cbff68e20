"""Verify an export: read every file back from storage and check it against its record.

Per file: present, its SHA-256 and size as written, and no other part file beside them (the
query view would read it too); over the version: the row count and the
content digest, recomputed from the files' rows, equal to what PostgreSQL computed in the
export's snapshot (records.Stats). A version that passes gets `verified_at`; one that fails
gets `verify_error` (and loses `verified_at`: retention's `--then export` waits again).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import structlog

from consumer import exceptions, jobs, queries
from consumer.cold import digest, files, formats, layout, records, storage
from consumer.cold.storage import Storage

log = structlog.get_logger("consumer.cold.verify")

READ_CHUNK = 1 << 20
DIGEST_BATCH = 65_536


class VerifyError(exceptions.ArchiverError):
    """An export does not match its record."""


@dataclass(frozen=True, slots=True)
class Checked:
    tenant: str
    month: date
    version: int
    ok: bool
    problem: str | None = None

    def as_item(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "month": layout.month_text(self.month),
                "version": self.version, "ok": self.ok, "problem": self.problem}  # fmt: skip


def problem_of(where: Storage, record: Any, strays: bool = True) -> str | None:
    """Why the version's files do not match its record (None: they do); with `strays`, also a
    part file beside them. Blocking I/O."""
    paths = layout.parts(record)
    missing = [p for p in paths if not storage.exists(where, p)]
    if missing:
        return f"missing file: {where.url_of(missing[0])}"
    month_dir = layout.month_dir(record["tenant_id"], record["month"])
    recorded = {where.path(p) for p in paths}
    stray = [f for f in storage.files_in(where, month_dir, layout.PART_PREFIX) if f not in recorded]
    if (
        stray and strays
    ):  # queries would read it too: an export or rewrite stopped while moving its files
        return f"file not in the export: {stray[0].rsplit('/', 1)[-1]} (export the month again)"
    hashes, size = [], 0
    for path in paths:
        sha, length = _sha256(where, path)
        hashes.append(sha)
        size += length
    whole = hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()
    if whole != record["sha256"] or size != record["compressed_size"]:
        return f"SHA-256 or size differs from the export's ({size} bytes read)"
    return _content_problem(where, paths, record)


def _sha256(where: Storage, path: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with storage.read_stream(where, path) as stream:
        while chunk := stream.read(READ_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _content_problem(where: Storage, paths: list[str], record: Any) -> str | None:
    rows, total = 0, 0
    fmt = formats.of_record(record)
    try:
        for path in paths:
            for batch in files.batches(where, path, fmt, DIGEST_BATCH, digest.COLUMNS):
                rows += batch.num_rows
                total += digest.of_batch(batch)
    except files.UNREADABLE as exc:
        return f"unreadable {_kind(fmt)}: {type(exc).__name__}"
    if rows != record["row_count"]:
        return f"{rows} rows in the files, {record['row_count']} exported"
    if str(total) != record["content_digest"]:
        return "the rows' content digest differs from PostgreSQL's at export"
    return None


def _kind(fmt: formats.Format) -> str:
    return "Parquet" if fmt.name == "parquet" else f"JSON lines ({fmt.compression})"


async def verify_record(
    conn: jobs.Connection, where: Storage, record: asyncpg.Record, strays: bool = True
) -> Checked:
    """Check one version and record the outcome (verified_at or verify_error)."""
    try:
        problem = await asyncio.to_thread(problem_of, where, record, strays)
    except OSError as exc:  # storage unreachable: nothing learnt about the files
        raise storage.failure(where, exc) from exc
    if problem is None:
        await conn.fetchval(queries.get("cold_verified"), record["id"])
    else:
        await conn.execute(queries.get("cold_verify_failed"), record["id"], problem)
        log.warning("cold.verify_failed", month=layout.month_text(record["month"]), problem=problem)
    return Checked(
        record["tenant_id"], record["month"], record["version"], problem is None, problem
    )


async def verify(
    conn: jobs.Connection, where: Storage, tenant: str | None = None, month: date | None = None
) -> list[Checked]:
    """Every current version (of a tenant, of a month), checked again."""
    return [await verify_record(conn, where, r) for r in await records.listing(conn, tenant, month)]


async def ensure(
    conn: jobs.Connection, where: Storage, record: asyncpg.Record, strays: bool = True
) -> None:
    """Raise VerifyError unless the version's files match its record (before a restore:
    `strays` False, as a restore reads only the version's own files)."""
    checked = await verify_record(conn, where, record, strays)
    if not checked.ok:
        raise VerifyError(
            f"the export of {layout.month_text(record['month'])} fails verify: {checked.problem}"
        )
