"""Fixtures: private Redis and PostgreSQL servers for the session, a fresh database per test
(cloned from a migrated template), a flushed Redis, and settings that point at both.

The archiver under test runs with least privilege, as a deployment should: `database_url` logs
in as a role holding only archiver_writer (sql/0003_roles.sql) and `redis_url` as the ACL user
of ops/redis-acl.conf, so a grant missing from either fails the suite. Tests set up and inspect
through admin connections (`db`, `redis`, `admin_database_url`, `admin_redis_url`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from pyarrow import fs

from consumer import service, settings
from ops import redisacl
from tests import s3server, servers

TEMPLATE = "archiver_template"
REDIS_PASSWORD = "archiver-test-password"
# What redis.conf sets in a least-privilege deployment (the ACL user may not CONFIG SET).
NOTIFICATIONS = "Ex$g"
SAMPLES = Path(__file__).parent / "data" / "samples"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    acl = [redisacl.user_line(REDIS_PASSWORD)]
    with servers.RedisServer(tmp_path_factory.mktemp("redis"), extra_config=acl) as server:
        yield server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.PostgresServer]:
    with servers.PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        asyncio.run(servers.create_migrated_database(server, TEMPLATE))
        yield server


@pytest.fixture
async def admin_database_url(pg_server: servers.PostgresServer) -> AsyncIterator[str]:
    """A fresh database cloned from the migrated template; the superuser's URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    await servers.create_database(pg_server.dsn(), name, template=TEMPLATE, owner=servers.PG_OWNER)
    yield pg_server.dsn(name)
    await servers.drop_database(pg_server.dsn(), name)


@pytest.fixture
def database_url(pg_server: servers.PostgresServer, admin_database_url: str) -> str:
    """The same database as the archiver's least-privilege login role (archiver_writer)."""
    return pg_server.dsn(admin_database_url.rsplit("/", 1)[1], user=servers.PG_WRITER)


@pytest.fixture
async def admin_redis_url(redis_server: servers.RedisServer) -> str:
    """The private Redis, flushed, notifications as redis.conf sets them; the admin's URL."""
    return await _emptied(redis_server.url, NOTIFICATIONS)


async def _emptied(url: str, notifications: str) -> str:
    """A private Redis flushed, with these keyspace notifications; its URL."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
        await client.config_set("notify-keyspace-events", notifications)
    finally:
        await client.aclose()
    return url


@pytest.fixture
def redis_url(redis_server: servers.RedisServer, admin_redis_url: str) -> str:
    """The same Redis as the archiver's ACL user (ops/redis-acl.conf)."""
    return redisacl.url(redis_server.port, REDIS_PASSWORD)


@pytest.fixture
async def redis(admin_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(admin_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def db(admin_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(admin_database_url)
    yield conn
    await conn.close()


MakeSettings = Callable[..., settings.Settings]

FAST: dict[str, Any] = {
    "checkpoint_ttl": "30s",
    "archive_after": "15s",
    "sweep_interval": "10s",
    "deadline_poll": "0.2s",
    "db_retries": 2,
    "db_retry_delay": "0.1s",
    "db_timeout": "3s",
    "redis_timeout": "2s",
    "ping_interval": "0.5s",
    "selftest_timeout": "2s",
    "batch_wait": "0.01s",
    "http_port": 0,
    "report_interval": "1s",
}


@pytest.fixture
def make_settings(redis_url: str, database_url: str, tmp_path: Path) -> MakeSettings:
    """Settings on the private servers with a scaled-down clock; keywords override."""

    def make(**overrides: Any) -> settings.Settings:
        values = {"redis_url": redis_url, "database_url": database_url} | FAST
        values["health_file"] = tmp_path / "health.json"
        return settings.load(**(values | overrides))

    return make


@pytest.fixture
async def parts(make_settings: MakeSettings) -> AsyncIterator[service.Parts]:
    async with service.connected(make_settings()) as connected:
        yield connected


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def api_database_url(pg_server: servers.PostgresServer, admin_database_url: str) -> str:
    """The same database as the History API's login role (holds only archiver_api)."""
    return pg_server.dsn(admin_database_url.rsplit("/", 1)[1], user=servers.PG_API)


# --- the cold tier: a private S3 API server (moto) and cold tier URLs ---------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.MotoServer]:
    with s3server.MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: s3server.MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS variables for the private S3 server; its endpoint URL."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3server.SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", s3server.REGION)
    return s3_server.endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh bucket on the private S3 server: its s3:// URL with a prefix."""
    name = f"cold-{uuid.uuid4().hex[:12]}"
    host = s3_env.removeprefix("http://")
    client = fs.S3FileSystem(
        endpoint_override=host, scheme="http", region=s3server.REGION, allow_bucket_creation=True
    )
    client.create_dir(name)
    return f"s3://{name}/archive"


# --- Redis Stack (RedisJSON + RediSearch) for the langgraph-redis source -----------------------
# What redis.conf sets for that source: keyevents (E), expired (x), generic (g: expire) and
# module events (d: json.set).
STACK_NOTIFICATIONS = "Exgd"


@pytest.fixture(scope="session")
def stack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    users = (
        redisacl.LANGGRAPH_USER,
        redisacl.LANGGRAPH_DELETE_USER,
        redisacl.ERASURE_LANGGRAPH_USER,
    )
    acl = [redisacl.user_line(REDIS_PASSWORD, user) for user in users]
    with servers.redis_stack(tmp_path_factory.mktemp("stack"), extra_config=acl) as server:
        yield server


@pytest.fixture
async def stack_admin_url(stack_server: servers.RedisServer) -> str:
    """The private Redis Stack, flushed, notifications as redis.conf sets them; admin's URL."""
    return await _emptied(stack_server.url, STACK_NOTIFICATIONS)


@pytest.fixture
def stack_url(stack_server: servers.RedisServer, stack_admin_url: str) -> str:
    """The same Redis Stack as the langgraph-redis source's ACL user (ops/redis-acl.conf)."""
    return redisacl.url(stack_server.port, REDIS_PASSWORD, user=redisacl.LANGGRAPH_USER)


@pytest.fixture
def stack_delete_url(stack_server: servers.RedisServer, stack_admin_url: str) -> str:
    """The same Redis Stack as the user of ARCHIVER_DELETE_ARCHIVED=1 (ops/redis-acl.conf)."""
    return redisacl.url(stack_server.port, REDIS_PASSWORD, user=redisacl.LANGGRAPH_DELETE_USER)


@pytest.fixture
def stack_erasure_url(stack_server: servers.RedisServer, stack_admin_url: str) -> str:
    """The same Redis Stack as the langgraph-redis erasure's ACL user (ops/redis-acl.conf)."""
    return redisacl.url(stack_server.port, REDIS_PASSWORD, user=redisacl.ERASURE_LANGGRAPH_USER)
