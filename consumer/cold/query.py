"""Query the cold tier in place with DuckDB: a `conversation_history` view over its files.

The view reads the current files of every tenant's month, whatever their format (Hive
partitioning: `tenant_id` and `month` come from the path, as text, and prune files by path):
the Parquet files through a pyarrow dataset that DuckDB scans (projections and filters pushed
down), the JSON lines files through DuckDB's read_json (zstd and gzip by their names) over
pyarrow's filesystem (an fsspec wrapper DuckDB reads through), the two as one view; on a
local volume and on S3 alike: DuckDB's own S3 extension is downloaded at run time, which a
locked-down host cannot do, and pyarrow's S3 client uses the same credentials as the export.
Any engine can read the layout directly (DuckDB:
`read_parquet('.../conversation_history/*/*/*.parquet', hive_partitioning = true)` and
`read_json('.../conversation_history/*/*/*.jsonl.*', hive_partitioning = true)`).
For operators: the SQL runs as given, with the process's rights.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from fsspec.implementations.arrow import ArrowFSWrapper
from pyarrow import fs

from consumer import exceptions, queries
from consumer.cold import export, layout
from consumer.cold.storage import Storage

VIEW = "conversation_history"
PARTITIONS = pa.schema([("tenant_id", pa.string()), ("month", pa.string())])
PARQUET_VIEW, JSONL_VIEW = "archiver_cold_parquet", "archiver_cold_jsonl"
JSONL_SUFFIXES = (".jsonl.zst", ".jsonl.gz")
MAX_ROW_BYTES = 1 << 30  # a JSON line DuckDB reads at most (a message that large still reads)
DUCK_TYPES = {pa.int64(): "BIGINT", pa.string(): "VARCHAR", export.UTC_MICROS: "TIMESTAMPTZ"}


class _ColdFileSystem(ArrowFSWrapper):  # type: ignore[misc]
    """pyarrow's filesystem of the cold tier as DuckDB reads it (paths `archivercold://...`)."""

    protocol = "archivercold"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """The filesystem's own path: a local `/abs/path`, or `bucket/key` on S3 (fsspec's
        default would take the bucket for a host name)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return str(path).removeprefix(f"{cls.protocol}://")


class QueryError(exceptions.UsageError):
    """The query cannot run."""


@dataclass(frozen=True, slots=True)
class Answer:
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool


def connect(where: Storage) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the `conversation_history` view over the cold tier."""
    con = duckdb.connect(":memory:")
    root = where.path(layout.TABLE)
    found = _files(where, root)
    con.register(PARQUET_VIEW, _parquet(where, root, [p for p in found if p.endswith(".parquet")]))
    _jsonl(con, where, [p for p in found if p.endswith(JSONL_SUFFIXES)])
    con.execute(queries.get("cold_query_view"))
    return con


def _schema() -> pa.Schema:
    return pa.unify_schemas([export.SCHEMA, PARTITIONS])


def _files(where: Storage, root: str) -> list[str]:
    """Every file under the layout's root (full paths; none if there is no root yet)."""
    selector = fs.FileSelector(root, allow_not_found=True, recursive=True)
    infos = where.filesystem.get_file_info(selector)
    return sorted(i.path for i in infos if i.type == fs.FileType.File)


def _parquet(where: Storage, root: str, paths: list[str]) -> Any:
    if not paths:
        return _schema().empty_table()
    partitioning = ds.partitioning(PARTITIONS, flavor="hive")
    return ds.dataset(paths, filesystem=where.filesystem, format="parquet",
                      partitioning=partitioning, partition_base_dir=root, schema=_schema(),
                      exclude_invalid_files=False)  # fmt: skip


def _jsonl(con: duckdb.DuckDBPyConnection, where: Storage, paths: list[str]) -> None:
    """The JSON lines files as the view JSONL_VIEW (an empty table when there are none)."""
    if not paths:
        con.register(JSONL_VIEW, _schema().empty_table())
        return
    con.register_filesystem(_ColdFileSystem(where.filesystem))
    columns = {f.name: DUCK_TYPES[f.type] for f in export.SCHEMA}
    found = con.read_json(
        [f"{_ColdFileSystem.protocol}://{p}" for p in paths],
        columns=columns,
        format="newline_delimited",
        hive_partitioning=True,
        hive_types={name: "VARCHAR" for name in PARTITIONS.names},
        maximum_object_size=MAX_ROW_BYTES,
    )
    found.create_view(JSONL_VIEW)


def run(where: Storage, sql: str, limit: int) -> Answer:
    """The first `limit` rows of `sql` (blocking: call it from a thread)."""
    con = connect(where)
    try:
        cursor = con.execute(sql)
        if cursor.description is None:
            return Answer([], [], False)
        columns = [d[0] for d in cursor.description]
        fetched = cursor.fetchmany(limit + 1)
    except duckdb.Error as exc:
        raise QueryError(f"DuckDB: {exc}") from None
    finally:
        con.close()
    rows = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in fetched[:limit]]
    return Answer(columns, rows, len(fetched) > limit)


def _plain(value: Any) -> Any:
    """A value JSON and the terminal can show: times stay times, the rest as text or numbers."""
    if value is None or isinstance(value, bool | int | float | str | dt.datetime):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.date | dt.time | dt.timedelta):
        return str(value)
    return repr(value) if not isinstance(value, bytes) else value.hex()
