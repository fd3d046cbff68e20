"""Commands packed by hiredis are byte for byte what redis-py packs, refusals included."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
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


def _packed(conn: AbstractConnection, args: tuple[Any, ...]) -> bytes:
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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:1/0", connection.Connection),
        ("rediss://127.0.0.1:1/0", connection.SSLConnection),
        ("unix:///tmp/archiver-none.sock?db=2", connection.UnixConnection),
    ],
)
def test_each_scheme_gets_its_own_connection_class(url: str, expected: type) -> None:
    client = connection.from_url(url)
    assert client.connection_pool.connection_class is expected


def test_unix_socket_connection_keeps_its_path_and_packs_with_hiredis() -> None:
    pool = connection.from_url("unix:///tmp/archiver-none.sock?db=2").connection_pool
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(conn, aioredis.UnixDomainSocketConnection)
    assert conn.path == "/tmp/archiver-none.sock"
    assert conn.db == 2
    theirs = aioredis.UnixDomainSocketConnection(path="/tmp/x")
    assert _packed(conn, CASES[2]) == _packed(theirs, CASES[2])
