"""The private test servers really start, stop, die, freeze and come back."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.servers import (
    PostgresServer,
    RedisServer,
    ServerBinaryNotFoundError,
    create_database,
    descendants,
    drop_database,
    free_port,
    pid_alive,
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path / "pg") as server:
        yield server


@asynccontextmanager
async def redis_client(
    server: RedisServer, socket_timeout: float = 5.0
) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(
        server.url, socket_timeout=socket_timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def pg_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


async def test_redis_answers_ping_on_its_own_port(redis_server: RedisServer) -> None:
    assert redis_server.port not in (6379, 5432)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    async with redis_client(redis_server) as client:
        assert await client.ping()
    assert "Ready to accept connections" in redis_server.log_tail()


async def test_redis_kill_then_start_keeps_aof_data(redis_server: RedisServer) -> None:
    async with redis_client(redis_server) as client:
        await client.set("survivor", "yes")
    redis_server.kill()
    assert not redis_server.is_running
    redis_server.start()
    async with redis_client(redis_server) as client:
        assert await client.get("survivor") == b"yes"


async def test_redis_restart_keeps_aof_data(redis_server: RedisServer) -> None:
    port = redis_server.port
    async with redis_client(redis_server) as client:
        await client.set("graceful", "1")
    redis_server.restart()
    redis_server.stop()
    redis_server.stop()  # idempotent
    redis_server.start()
    assert redis_server.port == port
    async with redis_client(redis_server) as client:
        assert await client.get("graceful") == b"1"


async def test_redis_pause_times_out_until_resume(redis_server: RedisServer) -> None:
    redis_server.pause()
    try:
        async with redis_client(redis_server, socket_timeout=0.3) as client:
            with pytest.raises(RedisTimeoutError):
                await client.ping()
    finally:
        redis_server.resume()
    async with redis_client(redis_server) as client:
        assert await client.ping()


def test_redis_extra_config_is_applied(tmp_path: Path) -> None:
    with RedisServer(tmp_path, extra_config=['rename-command CONFIG ""']) as server:
        assert 'rename-command CONFIG ""' in server.config_path.read_text()


def test_redis_bad_config_fails_with_log_tail(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra_config=["no-such-directive yes"])
    with pytest.raises(RuntimeError, match="no-such-directive"):
        server.start()
    assert not server.is_running


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = RedisServer(tmp_path, port=sock.getsockname()[1])
        with pytest.raises(RuntimeError, match="is in use"):
            server.start()


def test_missing_redis_binary_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_TEST_REDIS_SERVER", str(tmp_path / "no-redis-server"))
    with pytest.raises(ServerBinaryNotFoundError, match="ARCHIVER_TEST_REDIS_SERVER"):
        RedisServer(tmp_path)


def test_missing_postgres_binaries_fail_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVER_TEST_PG_BIN", str(tmp_path))
    with pytest.raises(ServerBinaryNotFoundError, match="ARCHIVER_TEST_PG_BIN"):
        PostgresServer(tmp_path)


async def test_postgres_answers_queries(pg_server: PostgresServer) -> None:
    assert pg_server.port not in (6379, 5432)
    assert pg_server.dsn("x") == f"postgresql://postgres@127.0.0.1:{pg_server.port}/x"
    async with pg_connection(pg_server.dsn()) as conn:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("show fsync") == "off"
        assert await conn.fetchval("show synchronous_commit") == "on"
        assert await conn.fetchval("show max_connections") == "200"


async def test_postgres_database_from_template(pg_server: PostgresServer) -> None:
    admin = pg_server.dsn()
    template, copy = 'tpl "quoted"', "copy-of-tpl"
    await create_database(admin, template)
    async with pg_connection(pg_server.dsn(template)) as conn:
        await conn.execute("create table marker (id int); insert into marker values (7)")
    await create_database(admin, copy, template=template)
    async with pg_connection(pg_server.dsn(copy)) as conn:
        assert await conn.fetchval("select id from marker") == 7
        await drop_database(admin, copy)  # FORCE: terminates this very session
    await drop_database(admin, copy)  # IF EXISTS
    async with pg_connection(admin) as conn:
        rows = await conn.fetch("select datname from pg_database")
    names = {row["datname"] for row in rows}
    assert template in names
    assert copy not in names


async def test_postgres_kill_then_start_recovers(pg_server: PostgresServer) -> None:
    async with pg_connection(pg_server.dsn()) as conn:
        await conn.execute("create table kept (v text); insert into kept values ('x')")
        children = descendants(pg_server.pid)
        assert children
        pg_server.kill()
    assert not pg_server.is_running
    assert not any(pid_alive(pid) for pid in children)
    pg_server.start()
    async with pg_connection(pg_server.dsn()) as conn:
        assert await conn.fetchval("select v from kept") == "x"
    assert "database system was interrupted" in pg_server.log_tail(100)


async def test_postgres_pause_blocks_until_resume(pg_server: PostgresServer) -> None:
    pg_server.pause()
    try:
        with pytest.raises(TimeoutError):
            await asyncpg.connect(pg_server.dsn(), timeout=0.5)
    finally:
        pg_server.resume()
    async with pg_connection(pg_server.dsn()) as conn:
        assert await conn.fetchval("select 1") == 1


def test_postgres_cleanup_removes_cluster(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path)
    server.start()
    assert (server.data_dir / "PG_VERSION").is_file()
    server.restart()
    server.cleanup()
    assert not server.base_dir.exists()
    with pytest.raises(RuntimeError, match="cleaned up"):
        server.start()


async def test_redis_stack_loads_json_and_search_and_knows_the_langgraph_acl_user(
    stack_admin_url: str, stack_url: str
) -> None:
    admin = aioredis.Redis.from_url(stack_admin_url)
    user = aioredis.Redis.from_url(stack_url)
    try:
        modules = {m[b"name"] for m in await admin.module_list()}
        assert {b"ReJSON", b"search"} <= modules
        await admin.execute_command("JSON.SET", "checkpoint:t:__empty__:1", "$", '{"a": 1}')  # type: ignore[no-untyped-call]
        got = await user.execute_command("JSON.GET", "checkpoint:t:__empty__:1")  # type: ignore[no-untyped-call]
        assert got == b'{"a":1}'
        await admin.set("checkpoint_latest:t:__empty__", "checkpoint:t:__empty__:1")
        with pytest.raises(NoPermissionError, match="permissions"):  # read-only for the archiver
            await user.set("checkpoint_latest:t:__empty__", "x")
        with pytest.raises(NoPermissionError, match="permissions"):
            await user.get("some:other:key")
    finally:
        await admin.aclose()
        await user.aclose()
