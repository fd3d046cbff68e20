"""The cold tier's JSON lines files (no servers): a row survives encoding, compression and
decoding exactly, whatever its content; a damaged file is an error, never wrong rows."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from consumer import exceptions, settings
from consumer.cold import columns, files, formats, jsonl, layout, storage
from consumer.cold.storage import Storage

MONTH = date(2026, 1, 1)
JSONL = [f for f in formats.EVERY if f.name == "jsonl"]
HUGE = "é🚀" * (3 << 20)  # 15 MB of UTF-8: longer than any read chunk
NASTY = "".join(chr(c) for c in range(1, 32)) + '\\"\u2028\u2029\ufeff\x7f ✓ \U0010ffff'
ROWS = [
    (1, None, None, "conv-1", 0, "user", "", None, "k1", "s1", 0),
    (2, "cust", "user", "conv-1", 1_767_225_600_000_007, "assistant", NASTY,
     '{"a": [1, "\\u0000", null], "ü": {"b": 1.5e300}}', "k2", "s2", 1_767_225_600_999_999),
    (2**62, "c", "u", "conv-\n2", -1, "tool", HUGE, "null", "k\t3", "s3", 253_402_300_799_999_999),
]  # fmt: skip


def table() -> pa.Table:
    values = list(zip(*ROWS, strict=True))
    arrays = [
        pa.array(v, pa.int64()).cast(f.type) if f.name in columns.TIMES else pa.array(v, f.type)
        for f, v in zip(columns.SCHEMA, values, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=columns.SCHEMA)


def write(where: Storage, fmt: formats.Format, rows: pa.Table) -> str:
    path = layout.part("acme", MONTH, 0, fmt)
    storage.make_dirs(where, path.rsplit("/", 1)[0])
    out = files.writer(storage.write_stream(where, path), fmt)
    out.write(rows)
    out.close()
    return path


@pytest.fixture
def where(tmp_path: Path) -> Storage:
    return storage.open_url(f"file://{tmp_path}")


@pytest.mark.parametrize("fmt", formats.EVERY, ids=lambda f: f.label)
@pytest.mark.parametrize("size", [1, 2, 1000])
def test_rows_come_back_exactly(where: Storage, fmt: formats.Format, size: int) -> None:
    path = write(where, fmt, table())
    back = pa.Table.from_batches(list(files.batches(where, path, fmt, size)), columns.SCHEMA)
    assert back.equals(table())
    some = list(files.batches(where, path, fmt, size, ["conversation_id", "timestamp"]))
    assert pa.Table.from_batches(some).column("timestamp").equals(table().column("timestamp"))


@pytest.mark.parametrize("fmt", JSONL, ids=lambda f: f.label)
def test_a_line_is_one_plain_json_object(where: Storage, fmt: formats.Format) -> None:
    path = write(where, fmt, table().slice(0, 2))
    raw = Path(where.path(path)).read_bytes()
    text = gzip.decompress(raw) if fmt.compression == "gzip" else _unzstd(raw)
    lines = text.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3  # a newline ends every row, none inside one
    first, second = (orjson.loads(line) for line in lines[:2])
    assert list(first) == columns.SCHEMA.names
    assert first["timestamp"] == "1970-01-01T00:00:00.000000Z" and first["metadata"] is None
    assert second["timestamp"] == "2026-01-01T00:00:00.000007Z"
    assert second["message_content"] == NASTY
    assert orjson.loads(second["metadata"])["ü"] == {"b": 1.5e300}  # metadata: JSON text


def _unzstd(raw: bytes) -> bytes:
    stream = pa.CompressedInputStream(pa.BufferReader(raw), "zstd")
    data: bytes = stream.read()
    return data


@pytest.mark.parametrize(
    "line", [b"", b"{", b"[]", b'{"id": 1}', b'{"id": "x"}'], ids=["empty", "cut", "list",
                                                                    "missing", "wrong type"]
)  # fmt: skip
def test_a_line_that_is_not_a_row_is_an_error(line: bytes) -> None:
    good = jsonl.encode(table().slice(0, 1)).rstrip(b"\n")
    with pytest.raises(jsonl.MalformedError):
        jsonl.decode([good, line])


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize("damage", [_cut, _flipped], ids=["truncated", "corrupted"])
@pytest.mark.parametrize("fmt", JSONL, ids=lambda f: f.label)
def test_a_damaged_file_is_unreadable(where: Storage, fmt: formats.Format, damage: Any) -> None:
    path = write(where, fmt, table())
    local = Path(where.path(path))
    local.write_bytes(damage(local.read_bytes()))
    with pytest.raises(files.UNREADABLE):
        list(files.batches(where, path, fmt, 1000))


def test_formats_and_their_settings() -> None:
    assert [f.suffix for f in formats.EVERY] == [".parquet", ".jsonl.zst", ".jsonl.gz"]
    assert formats.of_name("jsonl.gz") == formats.Format("jsonl", "gzip")
    assert layout.part("a", MONTH, 1, formats.of_name("jsonl.zst")).endswith(
        "month=2026-01/part-1.jsonl.zst"
    )
    s = settings.load(cold_format="jsonl", cold_compression="gzip")
    assert (s.cold_format, s.cold_compression) == ("jsonl", "gzip")
    assert settings.load().cold_format == "parquet"
    with pytest.raises(exceptions.ConfigError, match="ARCHIVER_COLD_COMPRESSION"):
        settings.load(cold_compression="gzip")  # Parquet is zstd
    with pytest.raises(exceptions.ConfigError, match="ARCHIVER_COLD_FORMAT"):
        settings.load(cold_format="csv")
    with pytest.raises(exceptions.ConfigError):
        formats.Format("parquet", "gzip")
