"""The content digest of a tenant's month: over its messages' identities, independent of order.

Each row contributes the first 64 bits of md5(conversation_id, 0x1f, message_key, 0x1f,
time in epoch microseconds) read as a signed integer; the digest is their exact sum (as
text). PostgreSQL computes the same (sql/queries_cold.sql, cold_month_stats) over the rows it
holds; verify computes it over the files read back from storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa

COLUMNS = ("conversation_id", "message_key", "timestamp")


def of_row(conversation_id: str, message_key: str, micros: int) -> int:
    identity = f"{conversation_id}\x1f{message_key}\x1f{micros}".encode()
    return int.from_bytes(hashlib.md5(identity).digest()[:8], "big", signed=True)


def of_batch(batch: pa.RecordBatch) -> int:
    """The sum over a batch holding COLUMNS (timestamps in microseconds)."""
    micros = batch.column("timestamp").cast(pa.int64()).to_pylist()
    conversations = batch.column("conversation_id").to_pylist()
    keys = batch.column("message_key").to_pylist()
    return sum(of_row(c, k, t) for c, k, t in zip(conversations, keys, micros, strict=True))


def of_batches(batches: Iterable[pa.RecordBatch]) -> str:
    return str(sum(of_batch(b) for b in batches))
