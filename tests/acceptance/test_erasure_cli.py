"""`archiver erase` and `archiver erasures` as an operator runs them: a subprocess, as the
archiver's ACL user and writer role, with the erasure key in the environment."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import redis.asyncio as aioredis

from consumer import fences, service
from tests import docs
from tests.acceptance.test_cli import archiver, env  # noqa: F401  (a fixture)
from tests.conftest import MakeSettings
from tests.integration.test_erasure import KEY, P, payload


async def test_erase_verify_and_list_from_the_command_line(
    env: dict[str, str],  # noqa: F811
    make_settings: MakeSettings,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    env = env | {"ARCHIVER_ERASURE_KEY": KEY}
    async with service.connected(make_settings()) as parts:  # archived in-process: quicker
        keys = []
        for conversation, customer in (("c-anna-1", "anna"), ("c-bob-1", "bob")):
            keys.append(P.key(conversation, time.time()))
            await P.write(redis, keys[-1], payload(conversation, customer=customer))
        assert (await parts.archiver.archive(keys, 10**9)).archived == 2
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 4

    dry = archiver(env, "erase", "--tenant", "acme", "--customer", "anna", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert orjson.loads(dry.stdout)["left"]["conversation_history"] == 2
    assert await db.fetchval("SELECT count(*) FROM erasures") == 0

    ran = archiver(
        env, "erase", "--tenant", "acme", "--customer", "anna", "--reason", "t-1", "--json"
    )
    assert ran.returncode == 0, ran.stderr
    done = orjson.loads(ran.stdout)
    assert set(done) == docs.json_fields("`erase`, `erase --resume`, `erasures` items")
    assert done["status"] == "completed" and done["counts"]["postgres_messages"] == 2
    assert done["subject_hash"] == fences.subject_hash(KEY.encode(), "acme", "customer", "anna")
    assert "anna" not in ran.stdout + ran.stderr  # the logs and the output name no one

    verified = archiver(env, "erase", "--verify", str(done["id"]), "--customer", "anna", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert set(orjson.loads(verified.stdout)) == docs.json_fields("`erase --verify`")
    wants_subject = archiver(env, "erase", "--verify", str(done["id"]))
    assert wants_subject.returncode == 2 and "--customer" in wants_subject.stderr

    listed = archiver(env, "erasures", "--json")
    assert [e["id"] for e in orjson.loads(listed.stdout)["items"]] == [done["id"]]
    assert "anna" not in listed.stdout
    resumed = archiver(env, "erase", "--resume", str(done["id"]), "--json")
    assert resumed.returncode == 0 and orjson.loads(resumed.stdout)["status"] == "completed"

    no_key = archiver(
        env | {"ARCHIVER_ERASURE_KEY": ""}, "erase", "--tenant", "acme", "--user", "u"
    )
    assert no_key.returncode == 2
    two = archiver(env, "erase", "--tenant", "acme", "--user", "u", "--customer", "c")
    assert two.returncode == 2 and "exactly one" in two.stderr


async def test_erase_and_verify_langgraph_threads_from_the_command_line(
    env: dict[str, str],  # noqa: F811
    stack_admin_url: str,
    stack_url: str,
    stack_erasure_url: str,
) -> None:
    from tests.integration import test_erasure_langgraph as lg

    env = env | {
        "ARCHIVER_ERASURE_KEY": KEY, "ARCHIVER_SOURCE": "langgraph-redis",
        "ARCHIVER_REDIS_URL": stack_url, "ARCHIVER_ERASURE_REDIS_URL": stack_erasure_url,
        "ARCHIVER_THREAD_PATTERN": lg.PATTERN, "ARCHIVER_STATE_FIELDS": "user_id=user.id",
        "ARCHIVER_CONFIGURE_NOTIFICATIONS": "false",
    }  # fmt: skip
    await asyncio.to_thread(lg._write_threads, stack_admin_url)
    admin = aioredis.Redis.from_url(stack_admin_url, decode_responses=True)
    try:
        mine = await lg.thread_keys(admin, "acme/anna/c2")
        root = str(await admin.get("checkpoint_latest:acme/anna/c2:__empty__"))  # names the user
        saved = await admin.json().get(root)  # written back after the erasure, below
        dry = archiver(env, "erase", "--tenant", "acme", "--user", "u-8", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        wanted = await lg.thread_keys(admin, "acme/anna/c1:x") | mine
        assert orjson.loads(dry.stdout)["left"]["redis_keys"] == len(wanted)

        ran = archiver(env, "erase", "--tenant", "acme", "--user", "u-8", "--json")
        assert ran.returncode == 0, ran.stderr
        done = orjson.loads(ran.stdout)
        assert done["counts"]["redis_threads"] == 2
        assert done["counts"]["redis_keys"] == len(wanted)
        assert "u-8" not in ran.stdout + ran.stderr

        verify = ("erase", "--verify", str(done["id"]), "--user", "u-8", "--json")
        clean = archiver(env, *verify)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert orjson.loads(clean.stdout)["left"]["redis_keys"] == 0
        await admin.set("checkpoint_latest:acme/anna/c2:__empty__", "a pointer left behind")
        await admin.json().set(root, "$", saved)
        left = archiver(env, *verify)
        assert left.returncode == 1
        assert orjson.loads(left.stdout)["left"]["redis_keys"] == 2
    finally:
        await admin.aclose()
