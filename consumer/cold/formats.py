"""The cold tier's file formats: Parquet (zstd) or JSON lines (zstd or gzip).

ARCHIVER_COLD_FORMAT and ARCHIVER_COLD_COMPRESSION choose the format of new exports; every
archived_partitions row says which one its files are in (`format`, `compression`), so that
verify, restore, queries and erasure read each version as it was written. Light on purpose
(no pyarrow): the CLI names formats before it loads anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer import exceptions

NAMES = ("parquet", "jsonl")
COMPRESSIONS = ("zstd", "gzip")
_JSONL_SUFFIXES = {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz"}


@dataclass(frozen=True, slots=True)
class Format:
    """How a version's files are written: `parquet`/`zstd`, `jsonl`/`zstd` or `jsonl`/`gzip`."""

    name: str = "parquet"
    compression: str = "zstd"

    def __post_init__(self) -> None:
        if self.name not in NAMES or self.compression not in COMPRESSIONS:
            raise exceptions.ConfigError(f"unknown cold tier format {self.label}")
        if self.name == "parquet" and self.compression != "zstd":
            raise exceptions.ConfigError(
                "ARCHIVER_COLD_COMPRESSION: Parquet files are zstd; gzip is for"
                " ARCHIVER_COLD_FORMAT=jsonl"
            )

    @property
    def suffix(self) -> str:
        """The part files' ending: `.parquet`, `.jsonl.zst` or `.jsonl.gz`."""
        return ".parquet" if self.name == "parquet" else _JSONL_SUFFIXES[self.compression]

    @property
    def label(self) -> str:
        return f"{self.name}/{self.compression}"


PARQUET = Format()
EVERY = (PARQUET, Format("jsonl", "zstd"), Format("jsonl", "gzip"))


def of_record(record: Any) -> Format:
    """The format an archived_partitions row's files are in."""
    return Format(record["format"], record["compression"])


def of_name(name: str) -> Format:
    """A format from the part files' suffix text, e.g. `jsonl.zst` (the bench's option)."""
    for each in EVERY:
        if each.suffix == f".{name}" or each.label == name:
            return each
    raise exceptions.UsageError(f"unknown cold tier format {name!r}")
