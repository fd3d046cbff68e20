"""Isolation in the database (sql/0007_api.sql): the History API's role reads through row-level
security keyed on the transaction's `archiver.tenant`, whatever the Python layer asks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumer import migrate
from tests import apidata, servers


@pytest.fixture
async def api_conn(
    db: asyncpg.Connection, api_database_url: str
) -> AsyncIterator[asyncpg.Connection]:
    await apidata.conversation(db, "tenant-a", "conv-a", customer="cust-a", user="user-a")
    await apidata.conversation(db, "tenant-b", "conv-b", customer="cust-b", user="user-b")
    for tenant in ("tenant-a", "tenant-b"):
        await apidata.cold_month(db, tenant, apidata.BASE.replace(month=9, day=1, hour=0))
        erasure_id = await db.fetchval(
            "INSERT INTO erasures (tenant_id, kind, subject_hash, requested_at)"
            " VALUES ($1, 'customer', 'h', now()) RETURNING id", tenant,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO erasure_fences (tenant_id, kind, subject_hash, erasure_id, requested_at)"
            " VALUES ($1, 'customer', 'h', $2, now())", tenant, erasure_id,
        )  # fmt: skip
    conn = await asyncpg.connect(api_database_url)
    yield conn
    await conn.close()


TABLES = ("conversation_history", "conversations", "archived_partitions", "erasures",
          "erasure_fences")  # fmt: skip


@pytest.mark.parametrize("table", TABLES)
async def test_without_a_tenant_the_api_role_sees_no_rows(
    api_conn: asyncpg.Connection, table: str
) -> None:
    assert await api_conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    async with api_conn.transaction():
        await api_conn.execute("SELECT set_config('archiver.tenant', '', true)")
        assert await api_conn.fetchval(f"SELECT count(*) FROM {table}") == 0


@pytest.mark.parametrize("table", TABLES)
async def test_with_a_tenant_it_sees_only_that_tenants_rows(
    api_conn: asyncpg.Connection, table: str
) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        async with api_conn.transaction():
            await api_conn.execute("SELECT set_config('archiver.tenant', $1, true)", tenant)
            seen = await api_conn.fetch(f"SELECT DISTINCT tenant_id FROM {table}")
            assert [r["tenant_id"] for r in seen] == [tenant]
            # asking for another tenant's rows by name finds nothing
            other = "tenant-b" if tenant == "tenant-a" else "tenant-a"
            query = f"SELECT count(*) FROM {table} WHERE tenant_id = $1"
            assert await api_conn.fetchval(query, other) == 0
    # the setting lasts only as long as its transaction
    assert await api_conn.fetchval(f"SELECT count(*) FROM {table}") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM api_keys",
        "SELECT count(*) FROM conversation_history_2026_11",
        "DELETE FROM conversation_history",
        "UPDATE conversations SET user_id = 'x'",
        "INSERT INTO conversations (tenant_id, conversation_id) VALUES ('tenant-a', 'x')",
        "SELECT archiver_ensure_partition(now())",
        "SELECT count(*) FROM archive_dead_letters",
        "UPDATE erasures SET status = 'completed'",
        "DELETE FROM erasure_fences",
        "ALTER TABLE conversations DISABLE ROW LEVEL SECURITY",
        "SET row_security = off; SELECT count(*) FROM conversations",
    ],
)
async def test_the_api_role_may_only_read_through_the_policies(
    api_conn: asyncpg.Connection, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await api_conn.execute(statement)


async def test_the_api_login_role_owns_nothing_and_holds_only_archiver_api(
    db: asyncpg.Connection, api_database_url: str
) -> None:
    role = await db.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = $1",
        servers.PG_API,
    )
    assert role is not None and not any(role.values())
    groups = await db.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
        servers.PG_API,
    )
    assert [g["rolname"] for g in groups] == ["archiver_api"]
    conn = await asyncpg.connect(api_database_url)
    try:
        await migrate.ensure_current(conn)  # it may check the schema version
    finally:
        await conn.close()


async def test_the_writer_and_reader_roles_still_see_every_tenant(
    api_conn: asyncpg.Connection, db: asyncpg.Connection, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM conversations") == 2
        assert await conn.fetchval("SELECT count(*) FROM conversation_history") == 6
    finally:
        await conn.close()
    async with db.transaction():
        await db.execute("SET LOCAL ROLE archiver_reader")
        assert await db.fetchval("SELECT count(*) FROM conversation_history") == 6
