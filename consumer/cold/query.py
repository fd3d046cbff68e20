"""Query the cold tier in place with DuckDB: a `conversation_history` view over its files.

The view reads the current files of every tenant's month (Hive partitioning: `tenant_id` and
`month` come from the path, as text, and prune files by path) through a pyarrow dataset that
DuckDB scans (projections and filters pushed down), on a local volume and on S3 alike: DuckDB's
own S3 extension is downloaded at run time, which a locked-down host cannot do, and pyarrow's
S3 client uses the same credentials as the export. Any engine can read the layout directly
(DuckDB: `read_parquet('.../conversation_history/*/*/*.parquet', hive_partitioning = true)`).
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
from pyarrow import fs

from consumer import exceptions
from consumer.cold import export, layout
from consumer.cold.storage import Storage

VIEW = "conversation_history"
PARTITIONS = pa.schema([("tenant_id", pa.string()), ("month", pa.string())])


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
    con.register(VIEW, _dataset(where))
    return con


def _dataset(where: Storage) -> Any:
    root = where.path(layout.TABLE)
    if where.filesystem.get_file_info(root).type == fs.FileType.NotFound:
        schema = pa.unify_schemas([export.SCHEMA, PARTITIONS])
        return schema.empty_table()
    partitioning = ds.partitioning(PARTITIONS, flavor="hive")
    return ds.dataset(root, filesystem=where.filesystem, format="parquet",
                      partitioning=partitioning, schema=pa.unify_schemas([export.SCHEMA, PARTITIONS]),
                      exclude_invalid_files=False)  # fmt: skip


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
