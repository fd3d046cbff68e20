"""The PostgreSQL roles of sql/0003_roles.sql: the archiver's login role owns nothing, holds
only archiver_writer, and still rolls over to a month that has no partition yet."""

from __future__ import annotations

import time

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from consumer import service
from tests import servers
from tests.integration.test_archive import NOW_DUE, P


def _checkpoint(conversation: str, stamp: str) -> bytes:
    message = {"role": "user", "content": "hello", "timestamp": stamp}
    return orjson.dumps({"conversation_id": conversation, "messages": [message]})


async def test_the_writer_rolls_over_to_a_month_without_a_partition(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    assert not await db.fetchval("SELECT to_regclass('conversation_history_2031_07') IS NOT NULL")
    key = P.key("next-month", time.time())
    await P.write(redis, key, _checkpoint("next-month", "2031-07-01T00:00:00Z"))

    outcome = await parts.archiver.archive([key], NOW_DUE)

    assert (outcome.archived, outcome.messages, outcome.errors) == (1, 1, 0)
    owner = await db.fetchval(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'conversation_history_2031_07'"
    )
    assert owner == servers.PG_OWNER  # created through the owner's SECURITY DEFINER function


async def test_the_archiver_login_role_owns_nothing_and_holds_only_the_writer_role(
    database_url: str, db: asyncpg.Connection
) -> None:
    role = await db.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = $1",
        servers.PG_WRITER,
    )
    assert role is not None and not any(role.values())
    groups = await db.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
        servers.PG_WRITER,
    )
    assert [g["rolname"] for g in groups] == ["archiver_writer"]
    owned = await db.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1",
        servers.PG_WRITER,
    )
    assert owned == 0
    assert database_url.startswith(f"postgresql://{servers.PG_WRITER}@")


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM conversation_history",
        "TRUNCATE conversations",
        "DROP TABLE archive_runs",
        "ALTER TABLE conversations ADD COLUMN x int",
        "CREATE TABLE sneaky (x int)",
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'x', 'x')",
    ],
)
async def test_the_writer_may_not_delete_or_change_the_schema(
    database_url: str, statement: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_reader_group_may_read_but_not_write(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL ROLE archiver_reader")
        assert await db.fetchval("SELECT count(*) FROM conversation_history") == 0
        assert await db.fetchval("SELECT count(*) FROM conversations") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("INSERT INTO archive_runs (kind, host, started_at, finished_at,"
                             " status) VALUES ('sweep', 'h', now(), now(), 'ok')")  # fmt: skip


async def test_partition_function_runs_as_its_owner_with_a_fixed_search_path(
    db: asyncpg.Connection,
) -> None:
    row = await db.fetchrow(
        "SELECT prosecdef, proconfig, pg_get_userbyid(proowner) AS owner FROM pg_proc"
        " WHERE proname = 'archiver_ensure_partition'"
    )
    assert row is not None and row["prosecdef"] and row["owner"] == servers.PG_OWNER
    assert row["proconfig"] == ["search_path=pg_catalog, public, pg_temp"]
    allowed = await db.fetchval(
        "SELECT has_function_privilege('public', 'archiver_ensure_partition(timestamptz)', 'EXECUTE')"
    )
    assert allowed is False
