"""JSON lines files of the cold tier: one JSON object per row, the Parquet files' columns.

A row is encoded by orjson: metadata as JSON text (a string, as in the Parquet files), times
as RFC 3339 text in UTC with their microseconds (`2026-01-02T03:04:05.000007Z`: lossless, and
DuckDB's read_json and pyarrow read them as timestamps), every other value as is. orjson
escapes control characters, so a raw newline only ever ends a row. Files are compressed by
pyarrow's zstd stream or the standard library's gzip, a row at a time, never whole in memory.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consumer import exceptions
from consumer.cold.columns import SCHEMA, TIMES, UTC_MICROS

CHUNK = 1 << 20  # decompressed bytes read at a time
GZIP_LEVEL = 6
ENCODE_ROWS = 4096  # rows turned into Python objects and JSON at a time
TIME_TEXT = "%Y-%m-%dT%H:%M:%SZ"  # %S of a microsecond timestamp carries its six decimals


class MalformedError(exceptions.ArchiverError):
    """A line is not a row of the cold tier's files."""


def encode(batch: pa.RecordBatch | pa.Table) -> bytes:
    """The rows of a batch (SCHEMA's columns) as JSON lines, each ending with a newline."""
    names = batch.schema.names
    values = [_plain(name, batch.column(name)) for name in names]
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    return b"".join(dumps(dict(zip(names, row, strict=True)), option=newline)
                    for row in zip(*values, strict=True))  # fmt: skip


def _plain(name: str, column: Any) -> list[Any]:
    if name in TIMES:
        return pc.strftime(column, format=TIME_TEXT).to_pylist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


def decode(lines: Sequence[bytes], names: Sequence[str] = SCHEMA.names) -> pa.RecordBatch:
    """Lines back into a batch of the named columns (MalformedError if one is not a row)."""
    try:
        rows = [orjson.loads(line) for line in lines]
        arrays = [_array(name, [row[name] for row in rows]) for name in names]
    except (orjson.JSONDecodeError, KeyError, TypeError, pa.ArrowException) as exc:
        raise MalformedError(f"not a row of the cold tier ({type(exc).__name__})") from None
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([SCHEMA.field(n) for n in names]))


def _array(name: str, values: list[Any]) -> pa.Array:
    if name in TIMES:
        return pa.array(values, pa.string()).cast(UTC_MICROS)
    return pa.array(values, SCHEMA.field(name).type)


def lines(stream: Any) -> Iterator[bytes]:
    """The lines of a (decompressed) stream without their newlines, a chunk read at a time."""
    pending: list[bytes] = []
    while data := _read(stream):
        parts = data.split(b"\n")
        if len(parts) == 1:
            pending.append(parts[0])
            continue
        if pending:
            parts[0] = b"".join([*pending, parts[0]])
        last = parts.pop()
        pending = [last] if last else []
        yield from parts
    if pending:  # a last line without its newline: a truncated file, which decode rejects
        yield b"".join(pending)


def _read(stream: Any) -> bytes:
    try:
        return bytes(stream.read(CHUNK))
    except (zlib.error, EOFError) as exc:  # gzip's: damaged or cut short
        raise MalformedError(f"damaged gzip data ({type(exc).__name__})") from None


def batches(
    stream: Any, size: int, names: Sequence[str] = SCHEMA.names
) -> Iterator[pa.RecordBatch]:
    """A decompressed stream's rows as batches of at most `size` rows."""
    held: list[bytes] = []
    for line in lines(stream):
        held.append(line)
        if len(held) >= size:
            yield decode(held, names)
            held = []
    if held:
        yield decode(held, names)


class Writer:
    """JSON lines into a binary sink through a zstd (pyarrow) or gzip (standard library) stream."""

    def __init__(self, sink: Any, compression: str) -> None:
        self._stream: Any
        if compression == "gzip":
            self._stream = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        else:
            self._stream = pa.CompressedOutputStream(sink, "zstd")
        self._sink = sink

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """The rows, encoded ENCODE_ROWS at a time (what Python holds of them at once)."""
        for start in range(0, table.num_rows, ENCODE_ROWS):
            self._stream.write(encode(table.slice(start, ENCODE_ROWS)))

    def close(self) -> None:
        self._stream.close()
        self._sink.close()


def open_reader(raw: BinaryIO, compression: str) -> Any:
    """A decompressing stream over a file's bytes."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return pa.CompressedInputStream(raw, "zstd")
