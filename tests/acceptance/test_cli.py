"""The `archiver` command as operators run it: a subprocess against private servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from tests import servers
from tests.conftest import FAST
from tests.integration.test_archive import P, payload
from tests.waiting import eventually


@pytest.fixture
def env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    values = {f"ARCHIVER_{k.upper()}": str(v) for k, v in FAST.items()}
    return (
        os.environ
        | values
        | {
            "ARCHIVER_REDIS_URL": redis_url,
            "ARCHIVER_DATABASE_URL": database_url,
            "ARCHIVER_HEALTH_FILE": str(tmp_path / "health.json"),
            "ARCHIVER_LOG_FORMAT": "json",
        }
    )


def archiver(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
async def empty_database(pg_server: servers.PostgresServer) -> AsyncIterator[str]:
    name = f"e_{os.getpid()}_{time.monotonic_ns()}"
    await servers.create_database(pg_server.dsn(), name)
    yield pg_server.dsn(name)
    await servers.drop_database(pg_server.dsn(), name)


def test_migrate_applies_once_then_is_a_no_op(env: dict[str, str], empty_database: str) -> None:
    env = env | {"ARCHIVER_DATABASE_URL": empty_database}
    first = archiver(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "0001_initial" in first.stdout
    again = archiver(env, "migrate")
    assert again.returncode == 0
    assert "up to date" in again.stdout


def test_run_refuses_a_database_with_pending_migrations(
    env: dict[str, str], empty_database: str
) -> None:
    result = archiver(env | {"ARCHIVER_DATABASE_URL": empty_database}, "run")
    assert result.returncode == 2
    assert "pending migration" in result.stderr
    assert "archiver migrate" in result.stderr


def test_unsafe_windows_are_refused_with_the_reason(env: dict[str, str]) -> None:
    result = archiver(env | {"ARCHIVER_SWEEP_INTERVAL": "1h"}, "sweep")
    assert result.returncode == 2
    assert "ARCHIVER_SWEEP_INTERVAL" in result.stderr


async def test_sweep_archives_and_reports(
    env: dict[str, str], redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = P.key("cron", time.time() - 20)
    await redis.set(key, payload("cron"), px=5_000)
    result = archiver(env, "sweep")
    assert result.returncode == 0, result.stderr
    assert "archived 1 (4 messages)" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 4
    status = archiver(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    assert report["health_file"]["content"]["mode"] == "sweep-only"
    assert report["health_file"]["check"]["ok"] is True
    assert report["database"]["runs"][0]["kind"] == "sweep"
    assert report["database"]["pending_migrations"] == []
    assert report["consumers"] == {"ok": True, "error": None, "items": []}
    assert archiver(env, "check").returncode == 0


async def test_sweep_exits_non_zero_when_a_checkpoint_fails(
    env: dict[str, str], redis: aioredis.Redis
) -> None:
    key = P.key("not-a-string", time.time() - 20)
    await redis.rpush(key, "x")
    await redis.pexpire(key, 5_000)
    result = archiver(env, "sweep")
    assert result.returncode == 1
    assert "errors 1" in result.stdout
    assert "x" not in [line for line in result.stderr.splitlines() if '"content"' in line]


def test_check_fails_without_a_health_file(env: dict[str, str]) -> None:
    result = archiver(env, "check")
    assert result.returncode == 1
    assert result.stdout == "no health file\n"


@pytest.fixture
def consumer_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = servers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        env=env | {"ARCHIVER_HTTP_PORT": str(port), "ARCHIVER_HTTP_HOST": "127.0.0.1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as r,
    ):
        return r.status, await r.text()


async def test_run_archives_serves_health_and_metrics_and_stops_on_sigterm(
    consumer_process: tuple[subprocess.Popen[str], int],
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    env: dict[str, str],
) -> None:
    proc, port = consumer_process

    async def ready() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return (await _get(port, "/readyz"))[0] == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout=20, what="/readyz 200")

    async def heartbeat_seen() -> bool:
        checked = await asyncio.to_thread(archiver, env, "health", "--json")
        consumers = orjson.loads(checked.stdout)["consumers"] if checked.stdout else []
        return checked.returncode == 0 and [c["pid"] for c in consumers] == [proc.pid]

    await eventually(heartbeat_seen, timeout=20, what="archiver health seeing the consumer")
    fast = type(P)(ttl=15.5, archive_after=0.3)
    for i in range(20):
        await fast.write(redis, fast.key(f"live-{i}"), payload(f"live-{i}"))

    async def all_archived() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM conversation_history") == 80)

    await eventually(all_archived, what="80 messages archived")
    status, body = await _get(port, "/healthz")
    assert status == 200
    assert orjson.loads(body)["status"] in ("healthy", "degraded")
    _, metrics = await _get(port, "/metrics")
    assert "archiver_messages_archived_total 80.0" in metrics
    assert "archiver_checkpoints_archived_total 20.0" in metrics

    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, stderr
    events = [orjson.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "checkpoint.archived" in events
    assert events[-1] == "consumer.stopped"
    assert "message 0" not in stderr  # message content never reaches the logs
    health = orjson.loads(await asyncio.to_thread(Path(env["ARCHIVER_HEALTH_FILE"]).read_bytes))
    assert health["checkpoints_archived"] == 20


async def test_history_conversations_and_dead_letters_commands(
    env: dict[str, str], redis: aioredis.Redis
) -> None:
    for i in range(3):
        await redis.set(P.key(f"read-{i}", time.time() - 20), payload(f"read-{i}"), px=5_000)
    await redis.set(P.key("broken", time.time() - 20), b"{not json", px=5_000)
    assert archiver(env, "sweep").returncode == 0

    shown = archiver(env | {"COLUMNS": "100"}, "history", "read-1")
    assert shown.returncode == 0, shown.stderr
    assert "message 3" in shown.stdout
    records = orjson.loads(archiver(env, "history", "read-1", "--json").stdout)["items"]
    assert [r["message_role"] for r in records] == ["user", "assistant", "user", "assistant"]

    first = orjson.loads(archiver(env, "conversations", "--limit", "2", "--json").stdout)
    assert len(first["items"]) == 2
    rest = orjson.loads(
        archiver(env, "conversations", "--limit", "2", "--after", first["next"], "--json").stdout
    )
    ids = {c["conversation_id"] for c in first["items"] + rest["items"]}
    assert ids == {"read-0", "read-1", "read-2"}
    assert rest["next"] is None

    letters = orjson.loads(archiver(env, "dead-letters", "--json").stdout)
    assert [d["source_key"].split(":")[2] for d in letters["items"]] == ["broken"]
    replay = archiver(env, "dead-letters", "replay")
    assert replay.returncode == 1
    assert "1 still failing" in replay.stdout
    assert archiver(env, "history", "nobody").returncode == 1
    assert archiver(env, "history", "nobody", "--json").returncode == 1


def test_a_sweep_that_cannot_write_its_health_file_still_succeeds(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = str(tmp_path / "a-file" / "health.json")
    result = archiver(env | {"ARCHIVER_HEALTH_FILE": unwritable}, "sweep")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("found 0, archived 0")
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert "health.not_written" in [e["event"] for e in events]
    assert "Traceback" not in result.stderr
