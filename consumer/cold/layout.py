"""Where the cold tier's files go, relative to ARCHIVER_COLD_URL (Hive-style, so that engines
prune by path):

    conversation_history/tenant_id={tenant}/month={YYYY-MM}/part-{n}{suffix}  the current version
    _manifests/{export_id}.json                                               one per export
    _staging/tenant_id={tenant}/month={YYYY-MM}/{export_id}/part-{n}{suffix}  while writing

`{suffix}` is the format's (consumer/cold/formats.py): `.parquet`, `.jsonl.zst` or `.jsonl.gz`;
months exported in different formats sit side by side in the same layout.

A tenant id goes into a path percent-encoded (pyarrow and DuckDB decode Hive values): `/`,
`=` and the like never make a directory of their own.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote, unquote

from consumer.cold.formats import PARQUET, Format

TABLE = "conversation_history"
MANIFESTS = "_manifests"
STAGING = "_staging"
SCHEMA_VERSION = 1
PART_PREFIX = "part-"


def month_text(month: date) -> str:
    return month.strftime("%Y-%m")


def _key(tenant: str, month: date) -> str:
    return f"tenant_id={quote(tenant, safe='')}/month={month_text(month)}"


def month_dir(tenant: str, month: date) -> str:
    """The directory of a tenant's month: its current version's files."""
    return f"{TABLE}/{_key(tenant, month)}"


def part_name(n: int, fmt: Format = PARQUET) -> str:
    return f"{PART_PREFIX}{n}{fmt.suffix}"


def part(tenant: str, month: date, n: int, fmt: Format = PARQUET) -> str:
    return f"{month_dir(tenant, month)}/{part_name(n, fmt)}"


def parts(record: Any) -> list[str]:
    """The files of an archived_partitions row (a version of a tenant's month), in order."""
    fmt = Format(record["format"], record["compression"])
    tenant, month = record["tenant_id"], record["month"]
    return [part(tenant, month, n, fmt) for n in range(record["files"])]


def staging_dir(tenant: str, month: date) -> str:
    """Exports of a tenant's month in progress (or interrupted: removed by the next one)."""
    return f"{STAGING}/{_key(tenant, month)}"


def staged_part(tenant: str, month: date, export_id: str, n: int, fmt: Format = PARQUET) -> str:
    return f"{staging_dir(tenant, month)}/{export_id}/{part_name(n, fmt)}"


def manifest(export_id: str) -> str:
    return f"{MANIFESTS}/{export_id}.json"


def tenant_of(value: str) -> str:
    """A tenant id as a Hive path value holds it."""
    return unquote(value)


def glob(fmt: Format = PARQUET) -> str:
    """Every current file of a format, for engines reading the layout."""
    return f"{TABLE}/*/*/*{fmt.suffix}"
