"""The columns of the cold tier's files, in every format: conversation_history's (tenant_id is
in the path, Hive-style), metadata as JSON text, times as UTC microseconds."""

from __future__ import annotations

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")
TIMES = ("timestamp", "archived_at")
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("customer_id", pa.string()),
        ("user_id", pa.string()),
        ("conversation_id", pa.string()),
        ("timestamp", UTC_MICROS),
        ("message_role", pa.string()),
        ("message_content", pa.string()),
        ("metadata", pa.string()),
        ("message_key", pa.string()),
        ("source_key", pa.string()),
        ("archived_at", UTC_MICROS),
    ]
)
