"""Commands packed by hiredis are byte for byte what redis-py packs, refusals included."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from consumer import connection

CASES: list[tuple[Any, ...]] = [
    ("GET", "langgraph:checkpoint:conv-1:1700000000"),
    ("SET", "k", b"\x00\xff binary", "PX", 5000),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", 3, 2.5, -7, 10**20),
    ("GET", "not-utf8-\udcff-key"),  # surrogate-escaped bytes: redis-py's packer
    ("CONFIG SET", "notify-keyspace-events", "Ex$g"),  # split by redis-py
    ("SET", "ñandú", "café"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
]


def _packed(conn: aioredis.Connection, args: tuple[Any, ...]) -> bytes:
    return b"".join(bytes(part) for part in conn.pack_command(*args))


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    ours = connection.Connection(encoding_errors="surrogateescape")
    theirs = aioredis.Connection(encoding_errors="surrogateescape")
    assert _packed(ours, args) == _packed(theirs, args)


@pytest.mark.parametrize("value", [True, None, {"a": 1}])
def test_refuses_what_redis_py_refuses(value: object) -> None:
    with pytest.raises(DataError):
        connection.Connection().pack_command("SET", "k", value)


def test_redis_urls_get_it_unix_sockets_keep_their_class() -> None:
    tcp = connection.from_url("redis://127.0.0.1:1/0")
    unix = connection.from_url("unix:///tmp/archiver-none.sock")
    assert tcp.connection_pool.connection_class is connection.Connection
    assert unix.connection_pool.connection_class is not connection.Connection
