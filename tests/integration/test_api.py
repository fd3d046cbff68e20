"""The History API over real PostgreSQL, as its own role: each endpoint, pages under concurrent
inserts, every authentication case, cross-tenant probes, and bad input (problem details)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from consumer import apikeys
from consumer.api import app, auth, reads
from tests import apidata

BASE = apidata.BASE
PROBLEM = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Api:
    client: httpx.AsyncClient
    keys: dict[str, str]
    db: asyncpg.Connection
    pool: asyncpg.Pool

    async def get(self, path: str, who: str = "a", **query: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return await self.client.get(path, params=query, headers=headers)


async def _seed(db: asyncpg.Connection) -> None:
    for i in range(5):  # tenant a: five conversations of customer c1 / user u1, an hour apart
        await apidata.conversation(db, "tenant-a", f"a{i}", customer="c1", user="u1",
                                   start=BASE + timedelta(hours=i), messages=4)  # fmt: skip
    await apidata.conversation(db, "tenant-a", "a-other", customer="c2", user="u2",
                               start=BASE + timedelta(days=1), messages=2)  # fmt: skip
    await apidata.conversation(db, "tenant-b", "b0", customer="cb", user="ub", messages=3)


async def _keys(db: asyncpg.Connection) -> dict[str, str]:
    async def key(tenant: str, scopes: list[str]) -> apikeys.Created:
        return await apikeys.create(db, tenant, "test", scopes, None)

    made = {"a": await key("tenant-a", ["read"]), "b": await key("tenant-b", ["read"]),
            "erase-only": await key("tenant-a", ["erase"]), "revoked": await key("tenant-a", ["read"]),
            "expired": await key("tenant-a", ["read"])}  # fmt: skip
    await apikeys.revoke(db, made["revoked"].item["id"])
    await db.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
                     made["expired"].item["id"])  # fmt: skip
    return {who: created.key for who, created in made.items()}


@pytest.fixture
async def api(db: asyncpg.Connection, api_database_url: str) -> AsyncIterator[Api]:
    await _seed(db)
    keys = await _keys(db)
    async with serving(app.Config(api_database_url), db, keys) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(
    config: app.Config, db: asyncpg.Connection, keys: dict[str, str]
) -> AsyncIterator[Api]:
    """The app in process (ASGI), on a pool of the API's own role."""
    application = app.create(config)
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=4,
                                     server_settings=app.SERVER_SETTINGS)  # fmt: skip
    application.state.pool = pool
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, keys, db, pool)
    finally:
        await pool.close()


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# --- the pool ------------------------------------------------------------------------------------


async def test_a_pooled_connection_keeps_no_tenant_after_a_request(
    api: Api, api_database_url: str
) -> None:
    """Connections go back to the pool without asyncpg's RESET ALL (app.open_pool): the tenant
    a request named ends with its transaction, also when the request is refused inside it."""
    config = app.Config(api_database_url, pool_size=1)  # every request on the same connection
    application = app.create(config)
    application.state.pool = pool = await app.open_pool(config)
    headers = {"Authorization": f"Bearer {api.keys['a']}"}
    try:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/v1/users/u1/profile", headers=headers)).status_code == 200
            lacks_scope = await client.get("/v1/erasures/1", headers=headers)
            assert lacks_scope.status_code == 403  # refused after the key named the tenant
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT current_setting('archiver.tenant', true)") in (
                None,
                "",
            )
            assert await conn.fetchval("SELECT count(*) FROM conversations") == 0
    finally:
        await pool.close()


# --- each endpoint -------------------------------------------------------------------------------


async def test_conversations_newest_first_with_counts(api: Api) -> None:
    body = _ok(await api.get("/v1/conversations"))
    assert [c["conversation_id"] for c in body["items"]] == [
        "a-other",
        "a4",
        "a3",
        "a2",
        "a1",
        "a0",
    ]
    assert body["next_cursor"] is None
    first = body["items"][1]
    assert first == {"conversation_id": "a4", "customer_id": "c1", "user_id": "u1",
                     "started_at": "2026-11-02T13:00:00+00:00",
                     "ended_at": "2026-11-02T13:03:00+00:00", "message_count": 4}  # fmt: skip


async def test_conversations_filtered(api: Api) -> None:
    by_customer = _ok(await api.get("/v1/conversations", customer_id="c2"))
    assert [c["conversation_id"] for c in by_customer["items"]] == ["a-other"]
    by_user = _ok(await api.get("/v1/conversations", user_id="u1", limit=10))
    assert len(by_user["items"]) == 5
    window = _ok(await api.get("/v1/conversations", since="2026-11-02T12:00:00Z",
                               until="2026-11-02T14:00:00+00:00"))  # fmt: skip
    assert [c["conversation_id"] for c in window["items"]] == ["a4", "a3"]


async def test_a_conversations_messages_in_order(api: Api) -> None:
    body = _ok(await api.get("/v1/conversations/a1/messages"))
    assert [m["content"] for m in body["items"]] == [f"message {i} of a1" for i in range(4)]
    assert [m["role"] for m in body["items"]] == ["user", "assistant", "user", "assistant"]
    assert body["items"][2]["metadata"] == {"i": 2}
    assert body["items"][0]["timestamp"] == "2026-11-02T10:00:00+00:00"
    assert set(body["items"][0]) == {"id", "timestamp", "role", "content", "metadata"}


async def test_a_customers_messages_across_conversations(api: Api) -> None:
    body = _ok(await api.get("/v1/customers/c1/messages", limit=500))
    assert len(body["items"]) == 20
    stamps = [m["timestamp"] for m in body["items"]]
    assert stamps == sorted(stamps)
    assert {m["conversation_id"] for m in body["items"]} == {f"a{i}" for i in range(5)}
    window = _ok(await api.get("/v1/customers/c1/messages", since="2026-11-02T13:01:00Z"))
    assert [m["content"] for m in window["items"]] == [f"message {i} of a4" for i in (1, 2, 3)]


async def test_a_users_profile(api: Api) -> None:
    body = _ok(await api.get("/v1/users/u1/profile"))
    assert body == {
        "user_id": "u1", "conversation_count": 5, "message_count": 20,
        "first_conversation": {"conversation_id": "a0", "started_at": "2026-11-02T09:00:00+00:00",
                               "ended_at": "2026-11-02T09:03:00+00:00"},
        "last_conversation": {"conversation_id": "a4", "started_at": "2026-11-02T13:00:00+00:00",
                              "ended_at": "2026-11-02T13:03:00+00:00"},
    }  # fmt: skip


async def test_lists_name_the_tenants_months_in_the_cold_tier(api: Api) -> None:
    september, august, july = (BASE.replace(month=m, day=1, hour=0) for m in (9, 8, 7))
    await apidata.cold_month(api.db, "tenant-a", september)  # moved: no warm rows left
    await apidata.cold_month(api.db, "tenant-a", july, verified=False)  # not verified yet
    await apidata.cold_month(api.db, "tenant-b", august)  # another tenant's
    await apidata.cold_month(api.db, "tenant-a", BASE.replace(day=1, hour=0))  # still warm too
    for path in ("/v1/conversations", "/v1/conversations/a1/messages", "/v1/customers/c1/messages"):
        assert _ok(await api.get(path))["cold_months"] == ["2026-09"]
    after = _ok(await api.get("/v1/conversations", since="2026-10-01T00:00:00Z"))
    assert after["cold_months"] == []
    assert _ok(await api.get("/v1/conversations", "b"))["cold_months"] == ["2026-08"]


# --- pages under concurrent inserts --------------------------------------------------------------


async def _walk(api: Api, path: str, key: str, between: Any = None, **query: Any) -> list[Any]:
    seen: list[Any] = []
    cursor, turn = None, 0
    while True:
        page = _ok(await api.get(path, **query, **({"cursor": cursor} if cursor else {})))
        seen.extend(item[key] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between is not None:
            await between(turn)
        turn += 1


async def test_conversation_pages_skip_and_repeat_nothing_while_conversations_grow(
    api: Api,
) -> None:
    before = [c["conversation_id"] for c in _ok(await api.get("/v1/conversations"))["items"]]

    async def grow(turn: int) -> None:  # new conversations, and new messages in listed ones
        await apidata.conversation(api.db, "tenant-a", f"new{turn}", start=BASE + timedelta(days=2))
        await apidata.add_messages(api.db, "tenant-a", f"a{turn % 5}",
                                   [BASE + timedelta(days=3, minutes=turn)])  # fmt: skip

    seen = await _walk(api, "/v1/conversations", "conversation_id", grow, limit=2)
    assert len(seen) == len(set(seen))
    assert [c for c in seen if c in before] == before


async def test_message_pages_skip_and_repeat_nothing_while_messages_arrive(api: Api) -> None:
    before = [m["id"] for m in _ok(await api.get("/v1/customers/c1/messages", limit=500))["items"]]

    async def arrive(turn: int) -> None:  # earlier, between and later than the pages read
        stamps = [BASE - timedelta(hours=1), BASE + timedelta(hours=2, seconds=turn + 1),
                  BASE + timedelta(days=5, seconds=turn)]  # fmt: skip
        await apidata.add_messages(api.db, "tenant-a", f"late{turn}", stamps, customer="c1")

    seen = await _walk(api, "/v1/customers/c1/messages", "id", arrive, limit=3)
    assert len(seen) == len(set(seen))
    assert [m for m in seen if m in before] == before

    original = [m["id"] for m in _ok(await api.get("/v1/conversations/a2/messages"))["items"]]

    async def reply(turn: int) -> None:  # the conversation goes on, and a late message lands
        if turn >= 3:
            return
        stamps = [
            BASE + timedelta(hours=1, seconds=30 + turn),
            BASE + timedelta(days=1, seconds=turn),
        ]
        await apidata.add_messages(api.db, "tenant-a", "a2", stamps)

    in_conversation = await _walk(api, "/v1/conversations/a2/messages", "id", reply, limit=1)
    assert len(in_conversation) == len(set(in_conversation))
    assert [m for m in in_conversation if m in original] == original


# --- authentication ------------------------------------------------------------------------------

ENDPOINTS = ["/v1/conversations", "/v1/conversations/a1/messages", "/v1/customers/c1/messages",
             "/v1/users/u1/profile"]  # fmt: skip


async def test_no_valid_key_is_401(api: Api) -> None:
    for path in ENDPOINTS:
        for who in ["", "revoked", "expired", "unknown"]:
            key = api.keys.get(who, apikeys.generate())
            headers = {"Authorization": f"Bearer {key}"} if who else {}
            response = await api.client.get(path, headers=headers)
            _problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert apikeys.KEY_PREFIX not in response.text  # never echoed


async def test_a_malformed_authorization_is_401(api: Api) -> None:
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "cak_x", "Bearer \u00e9t\u00e9"]:
        raw = {b"Authorization": header.encode("latin-1")}  # as it comes over the wire
        response = await api.client.get("/v1/conversations", headers=raw)
        _problem(response, 401)


async def test_a_key_without_the_read_scope_is_403(api: Api) -> None:
    for path in ENDPOINTS:
        _problem(await api.get(path, "erase-only"), 403)


# --- isolation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("theirs", "nobodys"),
    [("/v1/conversations/b0/messages", "/v1/conversations/zz/messages"),
     ("/v1/customers/cb/messages", "/v1/customers/zz/messages"),
     ("/v1/users/ub/profile", "/v1/users/zz/profile")],
)  # fmt: skip
async def test_another_tenants_subjects_are_404_as_if_they_did_not_exist(
    api: Api, theirs: str, nobodys: str
) -> None:
    assert _ok(await api.get(theirs, "b"))["items" if "messages" in theirs else "user_id"]
    probe, absent = _problem(await api.get(theirs), 404), _problem(await api.get(nobodys), 404)
    assert probe == absent


async def test_lists_never_show_another_tenants_rows(api: Api) -> None:
    assert _ok(await api.get("/v1/conversations", customer_id="cb"))["items"] == []
    assert _ok(await api.get("/v1/conversations", user_id="ub"))["items"] == []
    only_b = _ok(await api.get("/v1/conversations", "b"))["items"]
    assert [c["conversation_id"] for c in only_b] == ["b0"]


async def test_a_python_bug_naming_another_tenant_still_reads_nothing_of_it(api: Api) -> None:
    """The database, not the Python layer, keeps tenants apart: a session authenticated as
    tenant a that asks for tenant b's rows by name gets none."""
    async with api.pool.acquire() as conn, conn.transaction(readonly=True):
        row = await conn.fetchrow(
            "SELECT * FROM archiver_api_key($1)", apikeys.digest(api.keys["a"])
        )
        assert row is not None and row["tenant_id"] == "tenant-a"
        await conn.execute("SELECT set_config('archiver.tenant', 'tenant-a', true)")
        confused = auth.Session(conn, "tenant-b", row["key_id"])  # the bug
        page = await reads.conversations(confused, reads.ConversationFilter(), reads.Page())
        assert page["items"] == []
        with pytest.raises(Exception, match="no such user"):
            await reads.profile(confused, "ub")


# --- bad input -----------------------------------------------------------------------------------


BAD_INPUT: list[tuple[str, dict[str, str], int]] = [
    ("/v1/conversations", {"tenant_id": "tenant-b"}, 400),
    ("/v1/conversations", {"limit": "0"}, 422),
    ("/v1/conversations", {"limit": "501"}, 422),
    ("/v1/conversations", {"limit": "ten"}, 422),
    ("/v1/conversations", {"cursor": "not-a-cursor"}, 400),
    ("/v1/conversations", {"cursor": "!!"}, 422),
    ("/v1/conversations", {"customer_id": "x\x00y"}, 422),
    ("/v1/conversations", {"user_id": "u" * 257}, 422),
    ("/v1/conversations", {"since": "2026-11-02T12:00:00"}, 422),  # no zone
    ("/v1/conversations", {"since": "9999-12-31T23:00:00-05:00"}, 422),  # past year 9999
    ("/v1/conversations", {"until": "yesterday"}, 422),
    ("/v1/conversations/a1/messages", {"since": "2026-11-02T00:00:00Z"}, 400),
    ("/v1/users/u1/profile", {"limit": "5"}, 400),
    ("/v1/conversations/a%01b/messages", {}, 422),
    ("/v1/conversations/" + "c" * 300 + "/messages", {}, 422),
    ("/v1/customers/%7F/messages", {}, 422),
    ("/v1/users/%00/profile", {}, 422),
    ("/v1/nothing", {}, 404),
]


async def test_bad_input_is_a_problem_never_a_500(api: Api) -> None:
    for path, query, status in BAD_INPUT:
        _problem(await api.get(path, **query), status)


async def test_a_parameter_given_twice_is_400(api: Api) -> None:
    response = await api.client.get(
        "/v1/conversations?limit=1&limit=2", headers={"Authorization": f"Bearer {api.keys['a']}"}
    )
    _problem(response, 400)


async def test_a_cursor_of_another_list_is_refused(api: Api) -> None:
    cursor = _ok(await api.get("/v1/conversations", limit=1))["next_cursor"]
    _problem(await api.get("/v1/customers/c1/messages", cursor=cursor), 400)
    forged = apikeys.generate()[4:]  # base64 text, not a cursor
    _problem(await api.get("/v1/conversations/a1/messages", cursor=forged), 400)


async def test_probes_and_the_schema_need_no_key(api: Api) -> None:
    assert _ok(await api.client.get("/healthz")) == {"status": "ok"}
    assert _ok(await api.client.get("/readyz")) == {"status": "ok"}
    schema = _ok(await api.client.get("/openapi.json"))
    assert set(schema["paths"]) >= set(ENDPOINTS[:1]) | {"/healthz", "/readyz"}
    assert (await api.client.get("/docs")).status_code == 200


async def test_even_a_bug_answers_in_problem_details(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> Any:
        raise RuntimeError("a bug, with secret content")

    monkeypatch.setattr(reads, "profile", broken)
    body = _problem(await api.get("/v1/users/u1/profile"), 500)
    assert "secret" not in str(body)


async def test_a_busy_pool_answers_503_after_the_timeout(api: Api, api_database_url: str) -> None:
    application = app.create(app.Config(api_database_url, pool_size=1, timeout=0.3))
    pool = await asyncpg.create_pool(api_database_url, min_size=1, max_size=1)
    application.state.pool = pool
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with pool.acquire(), httpx.AsyncClient(transport=transport, base_url="http://a") as c:
            response = await c.get(
                "/v1/conversations", headers={"Authorization": f"Bearer {api.keys['a']}"}
            )
            _problem(response, 503)
            assert response.headers["retry-after"]
            assert (await c.get("/readyz")).status_code == 503
    finally:
        await pool.close()
