"""Export a tenant's month from PostgreSQL to files in the cold tier: Parquet (zstd) or JSON
lines (zstd or gzip), as Limits.format says (ARCHIVER_COLD_FORMAT, ARCHIVER_COLD_COMPRESSION).

An export, top-down:

1. compare: the month as PostgreSQL holds it now (rows, content digest) with its current
   version in archived_partitions; the same rows in the same format → nothing to do
   (idempotent; a format change is a change like any other, a new version). A month whose rows
   changed since (late checkpoints) first gets the previous version's rows back (restore:
   rows retention removed since), so that the new version holds every row of the old one;
2. one REPEATABLE READ transaction: take the month's advisory lock (one exporter at a time),
   read the month's stats in its snapshot, and COPY the same snapshot's rows (sorted by
   conversation and time) out as CSV into pyarrow, which writes zstd Parquet (or orjson
   encodes JSON lines into a compressed stream) in a thread: memory stays bounded whatever
   the month's size (ARCHIVER_COLD_GROUP_BYTES per row group and a few MB in flight) and
   nothing blocks the event loop;
3. the files are written under a staging name (`_staging/...`), hashed (SHA-256) as they are
   written; complete, each is moved to its final name (an S3 copy, a local rename: an object
   appears whole or not at all); files a previous version left (more parts, another format)
   are removed;
4. the manifest (`_manifests/{export_id}.json`), then the archived_partitions row, last, in
   the export's transaction (the previous version stops being current in it).

A run killed or failing anywhere before step 3 leaves only staged files, which the next export
of the month removes; killed during step 3, the month's directory holds complete files
(possibly the new version's while the record still names the old: verify says so and the next
export writes a new version). Nothing points at a file that is incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog

from consumer import exceptions, jobs, queries
from consumer.cold import columns, files, formats, layout, records, restore, storage
from consumer.cold.formats import PARQUET, Format
from consumer.cold.storage import Storage

log = structlog.get_logger("consumer.cold.export")


def _returning_pool() -> None:
    """pyarrow's memory from jemalloc, which hands freed memory back to the OS; its default
    (mimalloc) keeps it. Measured (ops/bench, scenario cold): a 5-million-row month's export
    peaked at 353 MB RSS with mimalloc and 263 MB with jemalloc, as fast. An operator's own
    ARROW_DEFAULT_MEMORY_POOL is left alone, and a pyarrow built without jemalloc keeps its own."""
    if (
        "ARROW_DEFAULT_MEMORY_POOL" not in os.environ
        and "jemalloc" in pa.supported_memory_backends()
    ):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


_returning_pool()

COPY_COLUMNS = {  # the CSV of cold_month_copy: name -> arrow type
    "id": pa.int64(),
    "customer_id": pa.string(),
    "user_id": pa.string(),
    "conversation_id": pa.string(),
    "timestamp_us": pa.int64(),
    "message_role": pa.string(),
    "message_content": pa.string(),
    "metadata": pa.string(),
    "message_key": pa.string(),
    "source_key": pa.string(),
    "archived_at_us": pa.int64(),
}
UTC_MICROS = columns.UTC_MICROS
# The files' columns: conversation_history's, tenant_id in the path (Hive), metadata as JSON text.
SCHEMA = columns.SCHEMA
CSV_BLOCK = 1 << 20  # bytes of CSV parsed at a time
PIPE_DEPTH = 64  # chunks of COPY output in flight between the loop and the writer thread


@dataclass(frozen=True, slots=True)
class Limits:
    """How files are written: their format, rows per file, and a row group (a batch of JSON
    lines) closes at either bound."""

    part_rows: int = 5_000_000
    group_rows: int = 65_536
    group_bytes: int = 32 << 20
    format: Format = PARQUET


@dataclass(frozen=True, slots=True)
class Result:
    """What exporting a tenant's month did: exported, unchanged, empty or busy."""

    tenant: str
    month: date
    status: str
    version: int | None = None
    rows: int = 0
    files: int = 0
    compressed_size: int = 0
    export_id: str | None = None
    restored: int = 0

    def as_item(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "month": layout.month_text(self.month),
            "status": self.status,
            "version": self.version,
            "rows": self.rows,
            "files": self.files,
            "compressed_size": self.compressed_size,
            "export_id": self.export_id,
            "restored_first": self.restored,
        }


@dataclass(frozen=True, slots=True)
class Written:
    """One file as written: its final (relative) path, SHA-256, size, rows and time span."""

    path: str
    sha256: str
    size: int
    rows: int
    min_us: int | None
    max_us: int | None

    def as_manifest(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "rows": self.rows,
                "min_timestamp_us": self.min_us, "max_timestamp_us": self.max_us}  # fmt: skip


async def export_month(
    conn: jobs.Connection, where: Storage, tenant: str, month: date, limits: Limits = Limits()
) -> Result:
    """Export a tenant's month if PostgreSQL holds rows its current version lacks."""
    previous = await records.current(conn, tenant, month)
    restored = 0
    if previous is not None:  # (a first export reads the month's stats once, in its snapshot)
        now = await records.stats(conn, tenant, month)
        if _current(previous, now, limits.format) or now.rows == 0:
            return Result(tenant, month, "unchanged", _version(previous))
        restored = await restore.restore_record(conn, where, previous)
    async with conn.transaction(isolation="repeatable_read"):
        result = await _export_locked(conn, where, tenant, month, limits)
    return Result(**{**_fields(result), "restored": restored})


def _current(record: Any, now: records.Stats, fmt: Format) -> bool:
    """Whether the version holds exactly the rows PostgreSQL has now, in the format wanted."""
    return records.covers(record, now) and formats.of_record(record) == fmt


def _version(record: Any) -> int | None:
    return None if record is None else int(record["version"])


def _fields(result: Result) -> dict[str, Any]:
    return {name: getattr(result, name) for name in Result.__slots__}


async def _export_locked(
    conn: jobs.Connection, where: Storage, tenant: str, month: date, limits: Limits
) -> Result:
    if not await conn.fetchval(queries.get("cold_lock_month"), tenant, month):
        return Result(tenant, month, "busy")
    previous = await records.current(conn, tenant, month)
    snapshot = await records.stats(conn, tenant, month)
    if _current(previous, snapshot, limits.format):
        return Result(tenant, month, "unchanged", _version(previous))
    if snapshot.rows == 0:
        return Result(tenant, month, "empty")
    export_id = uuid.uuid4().hex
    await asyncio.to_thread(storage.remove_tree, where, layout.staging_dir(tenant, month))
    written = await _write(conn, where, tenant, month, export_id, limits)
    if sum(w.rows for w in written) != snapshot.rows:
        raise exceptions.ArchiverError("the export's files do not hold its snapshot's rows")
    fmt = limits.format
    await asyncio.to_thread(_publish, where, tenant, month, export_id, written, fmt)
    version: int = await conn.fetchval(queries.get("cold_next_version"), tenant, month)
    manifest = _manifest(tenant, month, export_id, version, previous, snapshot, written, fmt)
    await asyncio.to_thread(storage.write_bytes, where, layout.manifest(export_id), manifest)
    await _record(conn, where, tenant, month, export_id, version, snapshot, written, fmt)
    size = sum(w.size for w in written)
    log.info("cold.exported", month=layout.month_text(month), version=version,
             format=fmt.label, rows=snapshot.rows, files=len(written), bytes=size)  # fmt: skip
    return Result(tenant, month, "exported", version, snapshot.rows, len(written), size, export_id)


# --- PostgreSQL -> files -------------------------------------------------------------------------


async def _write(
    conn: jobs.Connection, where: Storage, tenant: str, month: date, export_id: str,
    limits: Limits,
) -> list[Written]:  # fmt: skip
    """COPY the month's rows (in the transaction's snapshot) into staged part files."""
    pipe = Pipe(PIPE_DEPTH)
    writer = PartWriter(where, tenant, month, export_id, limits)
    lower, upper = records.bounds(month)
    written = asyncio.ensure_future(asyncio.to_thread(writer.run, pipe))
    try:
        await conn.copy_from_query(
            queries.get("cold_month_copy"),
            tenant,
            lower,
            upper,
            output=pipe.put,
            format="csv",
            force_quote=True,  # every value quoted: only an unquoted empty field is NULL
        )
        pipe.finish()
    except BaseException as exc:
        pipe.fail(exc)
        await asyncio.wait({written})
        if not written.cancelled() and written.exception() is not None:
            raise written.exception() from exc  # type: ignore[misc]
        raise
    return await written


class WriterGoneError(exceptions.ArchiverError):
    """The files' writer stopped: the COPY is abandoned."""


class Pipe:
    """Bytes from the event loop (COPY's output) to blocking reads in the writer's thread, at
    most `depth` chunks in between; an error on either side ends the other."""

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self._rest = b""
        self._done = False
        self.reader_gone = False
        self.closed = False

    async def put(self, chunk: bytes) -> None:
        data = bytes(chunk)
        while not self.reader_gone:
            try:
                self._queue.put_nowait(data)
                return
            except queue.Full:
                with contextlib.suppress(queue.Full):
                    await asyncio.to_thread(self._queue.put, data, True, 0.5)
                    return
        raise WriterGoneError()

    def finish(self) -> None:
        self._queue.put(None)

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(exc, timeout=5)

    # the reader's side: a file object pyarrow reads from
    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._rest and not self._done:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise exceptions.ArchiverError("the COPY from PostgreSQL failed") from item
            if item is None:
                self._done = True
            else:
                self._rest = item
        if size < 0 or size >= len(self._rest):
            data, self._rest = self._rest, b""
        else:
            data, self._rest = self._rest[:size], self._rest[size:]
        return data

    def close(self) -> None:
        self.reader_gone = True
        self.closed = True


class HashingSink:
    """A write-only file object over a pyarrow stream that hashes and counts what passes."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self._stream.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stream.close()


@dataclass
class _Open:
    """A part file being written: its writer, sink, rows so far and time span."""

    n: int
    sink: HashingSink
    writer: files.PartWriter
    rows: int = 0
    min_us: int | None = None
    max_us: int | None = None

    def write(self, group: pa.Table) -> None:
        self.writer.write(group)
        self.rows += group.num_rows
        low, high = _span(group)
        self.min_us = (
            low if self.min_us is None or (low is not None and low < self.min_us) else self.min_us
        )
        self.max_us = (
            high
            if self.max_us is None or (high is not None and high > self.max_us)
            else self.max_us
        )


@dataclass
class PartWriter:
    """In the writer's thread: CSV batches -> row groups -> staged part files, one at a time
    (a new part after `part_rows` rows)."""

    where: Storage
    tenant: str
    month: date
    export_id: str
    limits: Limits
    written: list[Written] = field(default_factory=list)

    def run(self, pipe: Pipe) -> list[Written]:
        current: _Open | None = None
        try:
            for group in _groups(_batches(pipe), self.limits):
                current = current or self._open()
                current.write(group)
                if current.rows >= self.limits.part_rows:
                    self._close(current)
                    current = None
            if current is not None or not self.written:
                self._close(current or self._open())
                current = None
        finally:
            pipe.close()
            if current is not None:  # failed: the staged file is left for the next export
                current.sink.close()
        return self.written

    def _open(self) -> _Open:
        n, fmt = len(self.written), self.limits.format
        staged = layout.staged_part(self.tenant, self.month, self.export_id, n, fmt)
        storage.make_dirs(self.where, staged.rsplit("/", 1)[0])
        sink = HashingSink(storage.write_stream(self.where, staged))
        return _Open(n, sink, files.writer(sink, fmt))

    def _close(self, part: _Open) -> None:
        part.writer.close()
        part.sink.close()
        final = layout.part(self.tenant, self.month, part.n, self.limits.format)
        digest = part.sink.sha256.hexdigest()
        self.written.append(
            Written(final, digest, part.sink.size, part.rows, part.min_us, part.max_us)
        )


def _batches(pipe: Pipe) -> Iterator[pa.RecordBatch]:
    """The COPY's CSV as record batches of the files' schema."""
    reader = pacsv.open_csv(
        pa.PythonFile(pipe, mode="r"),
        read_options=pacsv.ReadOptions(column_names=list(COPY_COLUMNS), block_size=CSV_BLOCK),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=COPY_COLUMNS,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    for batch in reader:
        yield _as_file_batch(batch)


def _as_file_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = []
    for name in SCHEMA.names:
        if name in ("timestamp", "archived_at"):
            columns.append(batch.column(f"{name}_us").cast(UTC_MICROS))
        else:
            columns.append(batch.column(name))
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _groups(batches: Iterator[pa.RecordBatch], limits: Limits) -> Iterator[pa.Table]:
    """Batches gathered into row groups of at most `group_rows` rows or `group_bytes` bytes;
    for JSON lines, which have no row groups, each batch as it comes (nothing held)."""
    if limits.format.name != "parquet":
        yield from (pa.Table.from_batches([b], schema=SCHEMA) for b in batches)
        return
    held: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in batches:
        held.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if rows >= limits.group_rows or size >= limits.group_bytes:
            yield pa.Table.from_batches(held, schema=SCHEMA)
            held, rows, size = [], 0, 0
    if held:
        yield pa.Table.from_batches(held, schema=SCHEMA)


def _span(group: pa.Table) -> tuple[int | None, int | None]:
    if group.num_rows == 0:
        return None, None
    found = pc.min_max(group.column("timestamp").cast(pa.int64()))
    return found["min"].as_py(), found["max"].as_py()


# --- publish and record --------------------------------------------------------------------------


def _publish(
    where: Storage, tenant: str, month: date, export_id: str, parts: list[Written],
    fmt: Format = PARQUET,
) -> None:  # fmt: skip
    """Each complete staged file to its final name; then the files of an older version that
    these did not replace (more parts, or another format) go."""
    storage.make_dirs(where, layout.month_dir(tenant, month))
    for n, written in enumerate(parts):
        staged = layout.staged_part(tenant, month, export_id, n, fmt)
        where.filesystem.move(where.path(staged), where.path(written.path))
    kept = {where.path(w.path) for w in parts}
    for stale in storage.files_in(where, layout.month_dir(tenant, month), layout.PART_PREFIX):
        if stale not in kept:
            where.filesystem.delete_file(stale)
    storage.remove_tree(where, f"{layout.staging_dir(tenant, month)}/{export_id}")


def combined_sha256(parts: list[Written]) -> str:
    """The file's SHA-256; for several, the SHA-256 of their digests in part order."""
    if len(parts) == 1:
        return parts[0].sha256
    return hashlib.sha256("".join(w.sha256 for w in parts).encode()).hexdigest()


def _manifest(
    tenant: str, month: date, export_id: str, version: int, previous: Any,
    snapshot: records.Stats, parts: list[Written], fmt: Format = PARQUET,
) -> bytes:  # fmt: skip
    document = {
        "schema_version": layout.SCHEMA_VERSION,
        "export_id": export_id,
        "table": layout.TABLE,
        "tenant_id": tenant,
        "month": layout.month_text(month),
        "version": version,
        "current": True,
        "supersedes": previous["export_id"] if previous is not None else None,
        "format": fmt.name,
        "compression": fmt.compression,
        "rows": snapshot.rows,
        "content_digest": snapshot.digest,
        "min_timestamp": snapshot.min_timestamp,
        "max_timestamp": snapshot.max_timestamp,
        "columns": SCHEMA.names,
        "files": [w.as_manifest() for w in parts],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


async def _record(
    conn: jobs.Connection, where: Storage, tenant: str, month: date, export_id: str,
    version: int, snapshot: records.Stats, parts: list[Written], fmt: Format = PARQUET,
) -> None:  # fmt: skip
    await conn.execute(queries.get("cold_retire"), tenant, month)
    await conn.execute(
        queries.get("cold_record"), tenant, month, version, export_id,
        where.url_of(layout.month_dir(tenant, month)), where.url_of(layout.manifest(export_id)),
        len(parts), snapshot.rows, sum(w.size for w in parts), combined_sha256(parts),
        snapshot.digest, snapshot.min_timestamp, snapshot.max_timestamp, fmt.name,
        fmt.compression,
    )  # fmt: skip
