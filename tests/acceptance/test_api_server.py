"""The History API as a product drives it: `archiver api-keys` and `archiver api` as
subprocesses, an HTTP client, and the API fuzzed from its own OpenAPI schema (schemathesis:
no 500, every answer as the schema says)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import hypothesis
import orjson
import pytest
from schemathesis import openapi
from schemathesis.core.result import Err, Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks

from tests import apidata, servers
from tests.conftest import TEMPLATE

START_TIMEOUT = 60.0
IDLE = 1.0


@dataclass(frozen=True, slots=True)
class Deployment:
    base: str
    keys: dict[str, str]
    env: dict[str, str]
    owner_url: str
    api_url: str


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def create_key(env: dict[str, str], tenant: str, *extra: str) -> dict[str, Any]:
    made = cli(
        env, "api-keys", "create", "--tenant", tenant, "--name", "acceptance", "--json", *extra
    )
    assert made.returncode == 0, made.stderr
    item: dict[str, Any] = orjson.loads(made.stdout)
    return item


async def _database(server: servers.PostgresServer, name: str) -> None:
    await servers.create_database(server.dsn(), name, template=TEMPLATE, owner=servers.PG_OWNER)
    conn = await asyncpg.connect(server.dsn(name))
    try:
        await apidata.conversation(conn, "acme", "wa-1", customer="cust-42", user="u-7", messages=5)
        await apidata.conversation(conn, "acme", "wa-2", customer="cust-42", user="u-7",
                                   start=apidata.BASE.replace(hour=12), messages=3)  # fmt: skip
        await apidata.conversation(conn, "globex", "gx-1", customer="cust-9", user="u-9")
    finally:
        await conn.close()


def _wait_ready(proc: subprocess.Popen[str], base: str) -> None:
    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    servers.wait_until(ready, START_TIMEOUT, "archiver api to be ready")


@pytest.fixture(scope="module")
def deployment(pg_server: servers.PostgresServer) -> Iterator[Deployment]:
    name = f"api_{uuid.uuid4().hex[:12]}"
    asyncio.run(_database(pg_server, name))
    owner_url, api_url = (
        pg_server.dsn(name, user=servers.PG_OWNER),
        pg_server.dsn(name, user=servers.PG_API),
    )
    port = servers.free_port()
    env = os.environ | {"ARCHIVER_DATABASE_URL": owner_url, "ARCHIVER_API_DATABASE_URL": api_url,
                        "ARCHIVER_API_PORT": str(port), "ARCHIVER_API_IDLE_TIMEOUT": f"{IDLE}s",
                        "ARCHIVER_LOG_FORMAT": "json",
                        "ARCHIVER_ERASURE_KEY": "acceptance-erasure-key-0123456789"}  # fmt: skip
    keys = {"acme": create_key(env, "acme", "--scope", "read,erase")["key"],
            "globex": create_key(env, "globex")["key"]}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "consumer", "api"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        yield Deployment(base, keys, env, owner_url, api_url)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        asyncio.run(servers.drop_database(pg_server.dsn(), name))


def _get(d: Deployment, path: str, key: str | None, **query: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{d.base}{path}", params=query, headers=headers, timeout=10)


def test_a_product_reads_a_customers_history(deployment: Deployment) -> None:
    key = deployment.keys["acme"]
    first = _get(deployment, "/v1/conversations", key, customer_id="cust-42", limit=1)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [c["conversation_id"] for c in page["items"]] == ["wa-2"]
    second = _get(deployment, "/v1/conversations", key, customer_id="cust-42", limit=1,
                  cursor=page["next_cursor"]).json()  # fmt: skip
    assert [c["conversation_id"] for c in second["items"]] == ["wa-1"]
    assert second["next_cursor"] is None
    messages = _get(deployment, "/v1/conversations/wa-1/messages", key).json()["items"]
    assert [m["content"] for m in messages] == [f"message {i} of wa-1" for i in range(5)]
    history = _get(deployment, "/v1/customers/cust-42/messages", key).json()["items"]
    assert len(history) == 8
    profile = _get(deployment, "/v1/users/u-7/profile", key).json()
    assert (profile["conversation_count"], profile["message_count"]) == (2, 8)


def test_other_tenants_and_missing_keys(deployment: Deployment) -> None:
    acme, globex = deployment.keys["acme"], deployment.keys["globex"]
    assert _get(deployment, "/v1/conversations/gx-1/messages", globex).status_code == 200
    probe = _get(deployment, "/v1/conversations/gx-1/messages", acme)
    assert probe.status_code == 404
    assert probe.headers["content-type"] == "application/problem+json"
    assert _get(deployment, "/v1/users/u-7/profile", None).status_code == 401


def test_a_revoked_key_is_refused_from_the_next_request(deployment: Deployment) -> None:
    made = create_key(deployment.env, "acme", "--expires", "90d")
    assert made["key"].startswith("cak_") and made["expires_at"]
    assert _get(deployment, "/v1/conversations", made["key"]).status_code == 200
    listed = orjson.loads(cli(deployment.env, "api-keys", "list", "--json").stdout)["items"]
    assert made["key"] not in str(listed)  # never shown again
    assert {k["prefix"] for k in listed} >= {made["key"][:12]}
    revoked = cli(deployment.env, "api-keys", "revoke", str(made["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert _get(deployment, "/v1/conversations", made["key"]).status_code == 401
    assert cli(deployment.env, "api-keys", "revoke", "999999").returncode == 1


def test_key_management_needs_the_owner(deployment: Deployment) -> None:
    as_api = cli(deployment.env | {"ARCHIVER_DATABASE_URL": deployment.api_url}, "api-keys", "list")
    assert as_api.returncode == 2
    assert "schema owner" in as_api.stderr


@pytest.mark.parametrize("user", [servers.PG_OWNER, servers.PG_WRITER, "postgres"])
def test_the_api_refuses_a_role_that_could_read_every_tenant(
    deployment: Deployment, user: str
) -> None:
    url = deployment.api_url.replace(f"{servers.PG_API}@", f"{user}@")
    env = deployment.env | {"ARCHIVER_API_DATABASE_URL": url, "ARCHIVER_API_PORT": "1"}
    refused = cli(env, "api")
    assert refused.returncode == 2, refused.stderr
    assert "could read every tenant" in refused.stderr


def test_connections_that_never_finish_a_request_are_closed(deployment: Deployment) -> None:
    async def half_sent_then_closed() -> bytes:
        port = int(deployment.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")  # never finished
            await writer.drain()
            async with asyncio.timeout(30 * IDLE):
                return await reader.read()
        finally:
            writer.close()

    async def trickled_until_closed() -> None:
        port = int(deployment.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")
        try:
            async with asyncio.timeout(30 * IDLE):
                while not reader.at_eof():
                    writer.write(b"x")  # a byte at a time does not keep it open
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE / 4):
                            await reader.read(1)
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed by the server while we wrote
        finally:
            writer.close()

    assert asyncio.run(half_sent_then_closed()) == b""
    asyncio.run(trickled_until_closed())
    assert httpx.get(f"{deployment.base}/healthz").status_code == 200


# --- fuzzing from the OpenAPI schema -------------------------------------------------------------


# schemathesis's pytest plugin does not run under pytest 9 yet: its Python API generates the
# cases (each operation's hypothesis strategy), hypothesis runs them.
FUZZ = hypothesis.settings(
    max_examples=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)  # fmt: skip


def _operation(result: Ok[Any] | Err[Any]) -> Any:
    assert isinstance(result, Ok), result.err()  # the schema itself is valid
    return result.ok()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_get_a_500_and_answers_match_the_schema(
    deployment: Deployment, mode: GenerationMode
) -> None:
    schema = openapi.from_url(f"{deployment.base}/openapi.json")
    headers = {"Authorization": f"Bearer {deployment.keys['acme']}"}
    operations = [_operation(result) for result in schema.get_all_operations()]
    assert len(operations) == 8
    if mode is GenerationMode.NEGATIVE:  # the probes take no input to get wrong
        operations = [o for o in operations if o.path.startswith("/v1/")]
    # A cursor is opaque: that "0" is not one of ours (400) is beyond what a schema says.
    excluded = [checks.positive_data_acceptance]

    for operation in operations:

        @FUZZ
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        fuzz()
