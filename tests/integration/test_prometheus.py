"""A real Prometheus (Debian's `prometheus`) scrapes `archiver run` on loopback, loads
ops/alerts.yml, and sees what PostgreSQL holds; the dashboard's queries run against it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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
import redis.asyncio as aioredis

from tests import servers
from tests.conftest import FAST
from tests.integration.test_archive import P, payload
from tests.unit.test_dashboard import DASHBOARD_EXPRESSIONS
from tests.waiting import eventually

RULES = Path(__file__).parents[2] / "ops" / "alerts.yml"
CHECKPOINTS = 10
MESSAGES_EACH = 4
STOP_TIMEOUT = 15.0


def prometheus_binary() -> str:
    """prometheus from Debian's `prometheus` package; the suite fails (never skips) without it."""
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(found).is_file():
        pytest.fail(
            "prometheus not found: install Debian's prometheus package"
            " (apt-get install prometheus, or `make test-servers` as root)"
        )
    return found


@contextlib.contextmanager
def started(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log`, SIGKILLed at the end if it still runs."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def archiver(
    redis_url: str, database_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`python -m consumer run` on the private servers, serving /metrics on a free port."""
    port = servers.free_port()
    env = os.environ | {f"ARCHIVER_{k.upper()}": str(v) for k, v in FAST.items()}
    env |= {
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_HEALTH_FILE": str(tmp_path / "health.json"),
        "ARCHIVER_LOG_FORMAT": "json",
        "ARCHIVER_HTTP_HOST": "127.0.0.1",
        "ARCHIVER_HTTP_PORT": str(port),
    }
    log = tmp_path / "archiver.log"
    with started([sys.executable, "-m", "consumer", "run"], log, env) as proc:
        yield proc, port, log


@pytest.fixture
def prometheus(
    archiver: tuple[subprocess.Popen[bytes], int, Path], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """Prometheus on a free loopback port, scraping the archiver every second."""
    binary = prometheus_binary()
    _, archiver_port, _ = archiver
    port = servers.free_port()
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "archiver",
                "static_configs": [{"targets": [f"127.0.0.1:{archiver_port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_bytes(orjson.dumps(config))
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = tmp_path / "prometheus.log"
    with started(argv, log) as proc:
        yield proc, f"http://127.0.0.1:{port}", log


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[Any]:
    data = await get_json(session, f"{base}/api/v1/query", query=promql)
    result: list[Any] = data["result"]
    return result


async def answers(
    session: aiohttp.ClientSession, url: str, alive: subprocess.Popen[bytes], log: Path
) -> bool:
    assert alive.poll() is None, f"exited with {alive.returncode}:\n{tail(log)}"
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    await eventually(lambda: _exited(proc), timeout=STOP_TIMEOUT, what=f"exit ({log.name})")
    assert proc.returncode == 0, tail(log)


async def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def dashboard_query(expr: str) -> str:
    """A dashboard expression as Grafana sends it for job=archiver, every instance."""
    expr = expr.replace("$__rate_interval", "30s")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "archiver" if m[1] == "job" else ".*", expr)


async def test_prometheus_scrapes_the_archiver_and_loads_the_alerts(
    archiver: tuple[subprocess.Popen[bytes], int, Path],
    prometheus: tuple[subprocess.Popen[bytes], str, Path],
    redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    consumer, port, consumer_log = archiver
    server, base, server_log = prometheus
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ready = f"{base}/-/ready"
        await eventually(lambda: answers(session, ready, server, server_log), 20, "Prometheus")
        readyz = f"http://127.0.0.1:{port}/readyz"
        await eventually(lambda: answers(session, readyz, consumer, consumer_log), 20, "/readyz")

        fast = type(P)(ttl=15.5, archive_after=0.3)
        for i in range(CHECKPOINTS):
            await fast.write(redis, fast.key(f"prom-{i}"), payload(f"prom-{i}", MESSAGES_EACH))

        async def archived() -> int:
            return int(await db.fetchval("SELECT count(*) FROM conversation_history"))

        async def all_archived() -> bool:
            return await archived() == CHECKPOINTS * MESSAGES_EACH

        await eventually(all_archived, timeout=15, what="every checkpoint archived")

        async def scraped() -> bool:
            targets = (await get_json(session, f"{base}/api/v1/targets"))["activeTargets"]
            up = [t for t in targets if t["labels"]["job"] == "archiver"]
            if not up or up[0]["health"] != "up":
                return False
            found = await query(session, base, 'archiver_messages_archived_total{job="archiver"}')
            return bool(found) and float(found[0]["value"][1]) == await archived()

        await eventually(scraped, timeout=10, what="target up and messages counted")
        await check_rules(session, base)
        await check_dashboard_queries(session, base)

    await stop(consumer, consumer_log)
    await stop(server, server_log)


async def check_rules(session: aiohttp.ClientSession, base: str) -> None:
    """Every rule of ops/alerts.yml loaded and evaluated without error, and is actionable."""

    async def rules() -> list[Any]:
        groups = (await get_json(session, f"{base}/api/v1/rules"))["groups"]
        return [rule for group in groups for rule in group["rules"]]

    async def evaluated() -> bool:
        return all(rule["health"] != "unknown" for rule in await rules())

    await eventually(evaluated, timeout=10, what="every alerting rule evaluated")
    loaded = await rules()
    assert [r["name"] for r in loaded] == re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M)
    for rule in loaded:
        name = rule["name"]
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert f'"{name}"' in rule["annotations"]["description"], name
        assert "ops/OPERATIONS.md" in rule["annotations"]["description"], name
    firing = await query(session, base, 'ALERTS{alertstate="firing"}')
    assert not firing, f"a healthy archiver raises {firing}"


async def check_dashboard_queries(session: aiohttp.ClientSession, base: str) -> None:
    """Every dashboard query is valid PromQL for this Prometheus, and the panels show data."""
    empty: list[str] = []

    async def all_show_data() -> bool:
        empty[:] = [
            where
            for where, expr in DASHBOARD_EXPRESSIONS
            if "archiver_errors_total" not in expr  # no series until something fails
            and not await query(session, base, dashboard_query(expr))
        ]
        return not empty

    try:
        await eventually(all_show_data, timeout=10, what="data on every dashboard panel")
    except AssertionError:
        raise AssertionError(f"no data for {empty}") from None
