"""Erasure over the History API: a key with the `erase` scope requests it (202, the tombstone
written as `archiver erase` writes it, as the API's own role under row-level security), follows
it, and once the archiver's erasure run is done the subject is gone from the API's reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from consumer import apikeys, erasure
from consumer.api import app
from tests import apidata
from tests.conftest import MakeSettings
from tests.integration.test_api import Api, _keys, _ok, _problem, _seed, serving

KEY = "test-erasure-key-0123456789abcdef"


@pytest.fixture
async def api(db: asyncpg.Connection, api_database_url: str) -> AsyncIterator[Api]:
    await _seed(db)
    keys = await _keys(db)
    keys["eraser"] = (await apikeys.create(db, "tenant-a", "privacy", ["read", "erase"], None)).key
    keys["eraser-b"] = (await apikeys.create(db, "tenant-b", "privacy", ["erase"], None)).key
    async with serving(app.Config(api_database_url, erasure_key=KEY.encode()), db, keys) as served:
        yield served


async def _post(api: Api, who: str, body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.keys[who]}"}
    return await api.client.post("/v1/erasures", json=body, headers=headers)


async def test_an_erasure_is_accepted_followed_and_carried_out(
    api: Api, make_settings: MakeSettings
) -> None:
    response = await _post(api, "eraser", {"customer_id": "c1", "reason": "ticket 4711"})
    assert response.status_code == 202, response.text
    made = response.json()
    assert (made["kind"], made["status"], made["step"]) == ("customer", "running", "redis")
    assert "c1" not in response.text  # the subject only as its keyed hash
    assert _ok(await api.get(f"/v1/erasures/{made['id']}", "eraser"))["id"] == made["id"]
    # the archiver's run (the `erasure` job does the same), as the writer
    async with erasure.Surroundings.open(make_settings(erasure_key=KEY)) as where:
        done = await erasure.run(where, made["id"])
    assert done.status == "completed"
    status = _ok(await api.get(f"/v1/erasures/{made['id']}", "eraser"))
    assert status["status"] == "completed" and status["counts"]
    _problem(await api.get("/v1/customers/c1/messages", "eraser"), 404)
    assert _ok(await api.get("/v1/customers/c2/messages", "eraser"))["items"]  # others stay


async def test_another_tenants_erasure_is_404_and_its_subjects_are_not_erased(api: Api) -> None:
    made = (await _post(api, "eraser", {"conversation_id": "a1"})).json()
    probe = await api.client.get(f"/v1/erasures/{made['id']}",
                                 headers={"Authorization": f"Bearer {api.keys['eraser-b']}"})  # fmt: skip
    _problem(probe, 404)
    _problem(await api.get("/v1/erasures/999999", "eraser"), 404)
    # tenant b asking to erase tenant a's customer writes a tombstone of its own tenant only
    other = await _post(api, "eraser-b", {"customer_id": "c1"})
    assert other.status_code == 202
    tenants = await api.db.fetch("SELECT DISTINCT tenant_id FROM erasure_fences ORDER BY 1")
    assert [t["tenant_id"] for t in tenants] == ["tenant-a", "tenant-b"]
    fenced_b = await api.db.fetchval(
        "SELECT count(*) FROM erasure_fences WHERE tenant_id = 'tenant-b' AND kind = 'conversation'"
    )
    assert fenced_b == 0  # tenant b sees no conversation of c1: none fenced for it


async def test_scopes_and_bad_requests(api: Api) -> None:
    _problem(await _post(api, "a", {"customer_id": "c1"}), 403)  # read only
    _problem(await api.get("/v1/erasures/1", "a"), 403)
    unauthenticated = await api.client.post("/v1/erasures", json={"customer_id": "c1"})
    _problem(unauthenticated, 401)
    for body in ({}, {"customer_id": "c1", "user_id": "u1"}, {"customer_id": "c\x00"},
                 {"customer_id": "c1", "tenant_id": "tenant-b"}, {"customer_id": "x" * 300},
                 ["c1"], {"customer_id": "c1", "reason": "r" * 501}):  # fmt: skip
        _problem(await _post(api, "eraser", body), 422)
    for path in ("/v1/erasures/0", "/v1/erasures/x", "/v1/erasures/99999999999999999999"):
        _problem(await api.get(path, "eraser"), 422)
    assert await api.db.fetchval("SELECT count(*) FROM erasures") == 0


async def test_without_the_erasure_key_the_api_says_so(
    db: asyncpg.Connection, api_database_url: str
) -> None:
    await apidata.conversation(db, "tenant-a", "a1", customer="c1")
    key = (await apikeys.create(db, "tenant-a", "privacy", ["erase"], None)).key
    application = app.create(app.Config(api_database_url))
    pool = await asyncpg.create_pool(api_database_url, min_size=1, max_size=2)
    application.state.pool = pool
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.post("/v1/erasures", json={"customer_id": "c1"},
                                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        _problem(response, 503)
    finally:
        await pool.close()
