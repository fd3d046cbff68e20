"""Retention, the periodic jobs and partitions as an operator drives them: the `archiver`
command in a subprocess, the service hosting the jobs, its health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from ops import seed
from tests import servers
from tests.acceptance.test_cli import archiver, env
from tests.waiting import eventually

__all__ = ["env"]  # the fixture, used by name

SHAPE = seed.Shape(tenants=("acme", "globex"), months=6, rows=2_400)


@pytest.fixture
def owner_env(
    env: dict[str, str], pg_server: servers.PostgresServer, admin_database_url: str
) -> dict[str, str]:
    """The same environment with the migration owner's connection (policy changes)."""
    name = admin_database_url.rsplit("/", 1)[1]
    return env | {"ARCHIVER_DATABASE_URL": pg_server.dsn(name, user=servers.PG_OWNER)}


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


async def test_policies_from_the_cli_to_a_retention_run(
    env: dict[str, str], owner_env: dict[str, str], db: asyncpg.Connection
) -> None:
    loaded = await seed.load(db, SHAPE, await db.fetchval("SELECT now()"))
    refused = archiver(env, "retention", "set", "--default", "--keep", "60d")
    assert refused.returncode == 2
    assert "schema owner" in refused.stderr and "Traceback" not in refused.stderr

    assert archiver(owner_env, "retention", "set", "--default", "--keep", "60d").returncode == 0
    assert archiver(owner_env, "retention", "set", "--tenant", "acme", "--keep", "30d",
                    "--then", "delete").returncode == 0  # fmt: skip
    shown = json_of(archiver(env, "retention", "show", "--json"))
    assert [(p["scope"], p["tenant"], p["keep"]) for p in shown["items"]] == [
        ("default", None, "60d"), ("tenant", "acme", "30d"),
    ]  # fmt: skip
    assert shown["next"] is None

    dry = json_of(archiver(env, "retention", "apply", "--dry-run", "--json"))
    assert dry["dry_run"] is True and dry["items"]
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == loaded.total

    went = json_of(archiver(env, "retention", "apply", "--json"))
    assert went["dry_run"] is False and went["next"] is None
    gone = went["rows_dropped"] + went["rows_deleted"]
    assert gone > 0
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == loaded.total - gone
    first = await db.fetchval(
        "SELECT min(\"timestamp\") > now() - interval '31 days' FROM conversation_history"
        " WHERE tenant_id = 'acme'"
    )
    assert first is True
    text = archiver(env, "retention", "apply")
    assert text.returncode == 0 and "partitions that went" in text.stdout

    listed = json_of(archiver(env, "partitions", "--json"))
    names = [p["name"] for p in listed["items"]]
    assert names == sorted(names) and all(str(n).startswith("conversation_history_") for n in names)
    assert set(went["partitions_dropped"]).isdisjoint(names)

    maintained = archiver(env, "jobs", "run", "partitions", "--json")
    assert json_of(maintained)["months_ready"]
    jobs = json_of(archiver(env, "jobs", "--json"))
    by_name = {j["job"]: j for j in jobs["items"]}
    assert set(by_name) == {"partitions", "retention", "cold", "erasure"}
    assert by_name["retention"]["status"] == "ok"
    assert by_name["retention"]["next_run_at"] is not None
    assert str(by_name["retention"]["last_run"]["started_at"]).endswith("Z")
    table = archiver(env, "jobs")
    assert table.returncode == 0 and "retention" in table.stdout and "0 2 * * *" in table.stdout

    assert archiver(owner_env, "retention", "unset", "--tenant", "acme").returncode == 0
    assert archiver(owner_env, "retention", "unset", "--tenant", "acme").returncode == 1


@contextlib.contextmanager
def service(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = servers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run"],
        env=env | {"ARCHIVER_HTTP_PORT": str(port), "ARCHIVER_HTTP_HOST": "127.0.0.1",
                   # a drop that must fail: the owner's connection points nowhere
                   "ARCHIVER_OWNER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as reply,
    ):
        return reply.status, await reply.text()


async def test_the_service_runs_the_jobs_and_reports_a_failed_one(
    env: dict[str, str],
    owner_env: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    """At start both jobs are due (never run): maintenance creates the coming months; the
    retention run fails (its owner connection is unreachable), which /readyz, the health
    file and the metrics show; the service keeps archiving."""
    await seed.load(db, SHAPE, await db.fetchval("SELECT now()"))
    assert archiver(owner_env, "retention", "set", "--default", "--keep", "45d").returncode == 0
    with service(env) as (proc, port):
        await _failed_job_reported(proc, port, env, db)


async def _failed_job_reported(
    proc: subprocess.Popen[str], port: int, env: dict[str, str], db: asyncpg.Connection
) -> None:
    async def failed_and_maintained() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            status, body = await get(port, "/readyz")
        except aiohttp.ClientError:
            return False
        ready = orjson.loads(body)
        done = ready.get("jobs", {}).get("partitions", {}).get("status") == "ok"
        return status == 200 and done and ready["failed_jobs"] == ["retention"]

    await eventually(failed_and_maintained, timeout=30, what="jobs run and reported")
    _, body = await get(port, "/readyz")
    assert "OSError" in body or "ConnectionRefused" in body  # the run's error, not content
    _, metrics = await get(port, "/metrics")
    assert 'archiver_job_failing{job_name="retention"} 1.0' in metrics
    assert 'archiver_job_runs_total{job_name="retention",status="failed"} 1.0' in metrics
    assert 'archiver_job_runs_total{job_name="partitions",status="ok"} 1.0' in metrics
    assert 'archiver_job_last_success_timestamp_seconds{job_name="partitions"}' in metrics
    ahead = await db.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname = 'conversation_history_'"
        " || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months', 'YYYY_MM')"
    )
    assert ahead == 1

    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, stderr
    events = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "job.started" in names and "job.completed" in names and "job.failed" in names
    health = orjson.loads(await asyncio.to_thread(Path(env["ARCHIVER_HEALTH_FILE"]).read_bytes))
    assert health["failed_jobs"] == ["retention"]
    assert health["status"] == "degraded"
    assert health["jobs"]["retention"]["error"]
    listed = json_of(archiver(env, "jobs", "--json"))
    retention = next(j for j in listed["items"] if j["job"] == "retention")
    assert retention["status"] == "failed"
