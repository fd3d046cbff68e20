"""Part files of the cold tier in their format (consumer/cold/formats.py): read as record
batches of the files' columns, written a row group (or a batch of lines) at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from consumer.cold import jsonl, storage
from consumer.cold.columns import SCHEMA
from consumer.cold.formats import Format
from consumer.cold.storage import Storage

JSONL_BATCH = 8192  # rows decoded at a time from a JSON lines file (bounds memory)
UNREADABLE = (pa.ArrowException, OSError, EOFError, jsonl.MalformedError)


class PartWriter(Protocol):
    """A part file being written: tables of SCHEMA's columns in, then closed."""

    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


class _Parquet:
    def __init__(self, sink: Any) -> None:
        self._writer = pq.ParquetWriter(sink, SCHEMA, compression="zstd")
        self._sink = sink

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def writer(sink: Any, fmt: Format) -> PartWriter:
    """A writer of `fmt` into a binary sink (closed with it)."""
    if fmt.name == "parquet":
        return _Parquet(sink)
    return jsonl.Writer(sink, fmt.compression)


def batches(
    where: Storage, path: str, fmt: Format, size: int, names: Sequence[str] | None = None
) -> Generator[pa.RecordBatch, None, None]:
    """A part file's rows (the named columns, default all) as batches of at most `size` rows,
    read from storage a block at a time. Blocking: iterate in a thread."""
    wanted = list(names) if names is not None else SCHEMA.names
    if fmt.name == "parquet":
        with where.filesystem.open_input_file(where.path(path)) as raw:
            yield from pq.ParquetFile(raw).iter_batches(size, columns=wanted)
        return
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(storage.read_stream(where, path))
        stream = stack.enter_context(jsonl.open_reader(raw, fmt.compression))
        yield from jsonl.batches(stream, min(size, JSONL_BATCH), wanted)
