"""Erasure with ARCHIVER_SOURCE=langgraph-redis against the real library: threads written by a
LangGraph graph (a fake chat model, a subgraph, pending writes) through RedisSaver and
ShallowRedisSaver into Redis Stack, archived by the archiver as its ACL user
(archiver-langgraph), erased as the erasure's ACL user (archiver-erasure-langgraph). Each kind of
subject the identity mapping allows (conversation from the thread id, customer from
ARCHIVER_THREAD_PATTERN, user from ARCHIVER_STATE_FIELDS), a conversation without any mapping,
a checkpoint claimed before the erasure and committed after it, and --verify finding what is
left."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.redis import RedisSaver
from langgraph.checkpoint.redis.shallow import ShallowRedisSaver
from langgraph.graph import END, START, MessagesState, StateGraph

from consumer import checkpoints, erasure, exceptions, jobs, periodic, service, settings
from consumer.erasure import langgraph_side
from tests.integration import test_langgraph_source as lg

KEY = "test-erasure-key-0123456789abcdef"
TTL_MINUTES = 10.0  # nothing expires during a test
NOW_DUE = 10**9  # every checkpoint is due
PATTERN = r"(?P<tenant_id>[^/]+)/(?P<customer_id>[^/]+)/(?P<conversation_id>.+)"
FAMILIES = ("checkpoint", "checkpoint_latest", "checkpoint_write", "write_keys_zset",
            "write_registry")  # fmt: skip
# Thread -> user (in the state). acme/anna/c1:x extends the thread id acme/anna/c1 (another
# conversation, the same customer); globex/anna/c9 is another tenant's customer `anna`.
THREADS = {
    "acme/anna/c1": "u-7",
    "acme/anna/c1:x": "u-8",
    "acme/anna/c2": "u-8",
    "acme/bob/c3": "u-7",
    "acme/bob/c4": "u-9",
    "globex/anna/c9": "u-7",
}
ROOT = re.compile(r"checkpoint:(.+?):(?:__empty__:[0-9a-f-]{36})?")
SHALLOW = "acme/anna/s1"  # ShallowRedisSaver's, user u-7


class State(MessagesState):
    user: dict[str, str]


def _chat(saver: Any, thread: str, user: str, turns: int = 2) -> None:
    """A chatbot thread whose state names its user; a subgraph answers the last turn."""

    def inner(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("(checked by the subgraph)")]}

    sub = StateGraph(MessagesState)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    sub.add_edge("inner", END)

    def bot(state: State) -> dict[str, Any]:
        return {"messages": [AIMessage(f"reply {len(state['messages'])} on {thread}")]}

    graph = StateGraph(State)
    graph.add_node("bot", bot)
    graph.add_node("review", sub.compile())
    graph.add_edge(START, "bot")
    graph.add_edge("bot", "review")
    graph.add_edge("review", END)
    app = graph.compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    for turn in range(turns):
        app.invoke({"messages": [HumanMessage(f"question {turn}")], "user": {"id": user}}, config)


def _write_threads(url: str) -> None:
    with lg.sync_saver(RedisSaver, url, TTL_MINUTES) as saver:
        for thread, user in THREADS.items():
            _chat(saver, thread, user)
    with lg.sync_saver(ShallowRedisSaver, url, TTL_MINUTES) as saver:
        _chat(saver, SHALLOW, "u-7")


@pytest.fixture
def make(
    stack_url: str, stack_erasure_url: str, database_url: str, tmp_path: Path
) -> Callable[..., settings.Settings]:
    def made(**overrides: Any) -> settings.Settings:
        return settings.load(**({
            "redis_url": stack_url, "erasure_redis_url": stack_erasure_url,
            "database_url": database_url, "health_file": tmp_path / "health.json",
            "source": "langgraph-redis", "thread_pattern": PATTERN,
            "state_fields": "user_id=user.id", "configure_notifications": False,
            "erasure_key": KEY,
        } | lg.WINDOWS | {"checkpoint_ttl": "20m", "archive_after": "1m"} | overrides))  # fmt: skip

    return made


@pytest.fixture
async def admin(stack_admin_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack_admin_url, decode_responses=True)
    yield client
    await client.aclose()


async def thread_keys(admin: aioredis.Redis, thread: str) -> set[str]:
    """Every key of a thread, by its documents' thread_id, or by its name (longest id first)."""
    found = set()
    for family in FAMILIES:
        async for key in admin.scan_iter(match=f"{family}:*", count=1000):
            if await _of_thread(admin, key, family, thread):
                found.add(key)
    return found


async def _of_thread(admin: aioredis.Redis, key: str, family: str, thread: str) -> bool:
    if not key.startswith(f"{family}:{thread}:"):
        return False
    if family in ("checkpoint", "checkpoint_write"):
        named: Any = await admin.json().get(key, "$.thread_id")
        return bool(named) and named[0] == thread
    longer = [t for t in (*THREADS, SHALLOW) if t != thread and key.startswith(f"{family}:{t}:")]
    return not [t for t in longer if len(t) > len(thread)]


async def erase(s: settings.Settings, tenant: str, kind: str, subject: str) -> erasure.Erasure:
    async with erasure.Surroundings.open(s) as where:
        async with where.pool.acquire() as conn:
            requested = await erasure.request(conn, where.key, tenant, kind, subject, "ticket")
        return await erasure.run(where, requested.id)


async def verify(s: settings.Settings, done: erasure.Erasure, subject: str) -> erasure.Verification:
    async with erasure.Surroundings.open(s) as where:
        return await erasure.verify(where, done.id, subject)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("kind", "subject", "gone"),
    [
        ("conversation", "c1", {"acme/anna/c1"}),
        ("customer", "anna", {"acme/anna/c1", "acme/anna/c1:x", "acme/anna/c2", SHALLOW}),
        ("user", "u-7", {"acme/anna/c1", "acme/bob/c3", SHALLOW}),
    ],
)
async def test_each_kind_of_subject_loses_every_key_of_its_threads_and_only_those(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    db: asyncpg.Connection, kind: str, subject: str, gone: set[str],
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    before = {t: await thread_keys(admin, t) for t in (*THREADS, SHALLOW)}
    assert all(before.values())
    assert {k.split(":", 1)[0] for k in before["acme/anna/c1"]} == set(FAMILIES) - {
        "write_registry"
    }
    s = make()
    async with service.connected(s) as parts:
        await parts.sweeper.sweep()  # arms a shadow and a deadline for every root checkpoint
        layout = parts.archiver.redis.layout
    armed = [str(k) for k in await admin.zrange(layout.deadlines, 0, -1)]
    done = await erase(s, "acme", kind, subject)
    assert done.status == "completed"
    for thread, keys in before.items():
        left = await thread_keys(admin, thread)
        assert left == (set() if thread in gone else keys), thread
    for key in armed:  # a root checkpoint's key names its thread unambiguously
        named = ROOT.fullmatch(key)
        assert named is not None
        erased = named.group(1) in gone
        assert (await admin.zscore(layout.deadlines, key) is None) is erased
        assert (not await admin.exists(layout.shadow(key))) is erased
    assert done.counts["redis_threads"] == len(gone)
    assert done.counts["redis_keys"] == sum(len(before[t]) for t in gone)
    assert (await verify(s, done, subject)).ok
    rows = await db.fetch("SELECT DISTINCT tenant_id || '/' || conversation_id AS c"
                          " FROM conversation_history")  # fmt: skip
    conversations = {t.split("/")[0] + "/" + t.split("/")[2] for t in (*THREADS, SHALLOW)}
    assert {r["c"] for r in rows} == conversations - {
        t.split("/")[0] + "/" + t.split("/")[2] for t in gone
    }  # the sweep archived every thread; the erased ones' rows went with them


@pytest.mark.timeout(180)
async def test_documents_of_threads_whose_id_rules_them_out_are_not_read_whole(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    read = checkpoints.documents
    whole: list[str] = []

    async def documents(cp: Any, keys: Any, *paths: str) -> Any:
        if not paths:
            whole.extend(keys)
        return await read(cp, keys, *paths)

    monkeypatch.setattr(checkpoints, "documents", documents)
    done = await erase(make(), "acme", "customer", "bob")  # the customer is in the thread id
    assert done.counts["redis_threads"] == 2
    assert whole and all(k.startswith("checkpoint:acme/bob/") for k in whole)


@pytest.mark.timeout(180)
async def test_a_thread_the_pattern_cannot_map_is_matched_by_its_bytes_in_redis_and_dead_letters(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    def write() -> None:
        with lg.sync_saver(RedisSaver, stack_admin_url, TTL_MINUTES) as saver:
            _chat(saver, "unmapped-thread", "u-7")  # no tenant/customer/conversation parts
            _chat(saver, "acme/bob/c3", "u-7")

    await asyncio.to_thread(write)
    s = make()
    async with service.connected(s) as parts:
        report = await parts.sweeper.sweep()  # the unmapped thread's checkpoints: dead letters
    assert report.outcome.dead_letters > 0
    kept = await thread_keys(admin, "acme/bob/c3")
    done = await erase(s, s.default_tenant, "user", "u-7")
    assert done.counts["dead_letters"] == report.outcome.dead_letters
    assert done.counts["redis_threads"] == 1
    assert not [k async for k in admin.scan_iter(match="*:unmapped-thread:*")]
    assert await thread_keys(admin, "acme/bob/c3") == kept  # tenant acme's u-7: not this one
    assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 0
    assert (await verify(s, done, "u-7")).ok


@pytest.mark.timeout(180)
async def test_a_thread_the_subject_starts_after_the_erasure_is_kept_and_archived(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make()
    async with erasure.Surroundings.open(s) as where:
        async with where.pool.acquire() as conn:
            requested = await erasure.request(conn, where.key, "acme", "customer", "bob")
        with lg.sync_saver(RedisSaver, stack_admin_url, TTL_MINUTES) as saver:
            await asyncio.to_thread(_chat, saver, "acme/bob/c5", "u-9")  # bob came back
        came_back = await thread_keys(admin, "acme/bob/c5")
        done = await erasure.run(where, requested.id)
        check = await erasure.verify(where, done.id, "bob")
    assert done.counts["redis_threads"] == 2  # c3 and c4, from before
    assert await thread_keys(admin, "acme/bob/c5") == came_back
    assert check.ok
    async with service.connected(s) as parts:
        await parts.sweeper.sweep()
    rows = await db.fetch("SELECT DISTINCT conversation_id FROM conversation_history"
                          " WHERE customer_id = 'bob'")  # fmt: skip
    assert [r["conversation_id"] for r in rows] == ["c5"]


@pytest.mark.timeout(180)
async def test_without_a_mapping_a_thread_is_erased_as_a_conversation_of_the_default_tenant(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make(thread_pattern=None, state_fields=None)
    kept = await thread_keys(admin, "acme/bob/c3")
    user = await erase(s, s.default_tenant, "user", "u-7")  # no mapping: nothing names a user
    assert user.counts["redis_keys"] == 0
    done = await erase(s, s.default_tenant, "conversation", "acme/anna/c1")
    assert done.counts["redis_threads"] == 1
    assert await thread_keys(admin, "acme/anna/c1") == set()
    assert await thread_keys(admin, "acme/anna/c1:x")  # a longer thread id: another thread
    assert await thread_keys(admin, "acme/bob/c3") == kept


@pytest.mark.timeout(180)
async def test_a_checkpoint_claimed_before_the_erasure_and_committed_after_inserts_nothing(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make()
    roots = [k async for k in admin.scan_iter(match="checkpoint:acme/bob/c3:__empty__:*")]
    async with service.connected(s) as parts:
        gate = Gate()
        write = parts.store.write

        async def held_write(*args: Any, **kwargs: Any) -> dict[str, int]:
            await gate.hold()  # claimed, read and decoded; the transaction is not open yet
            return await write(*args, **kwargs)

        monkeypatch.setattr(parts.store, "write", held_write)
        batch = asyncio.create_task(parts.archiver.archive(roots, NOW_DUE))
        await asyncio.wait_for(gate.reached.wait(), 30)
        async with erasure.Surroundings.open(s) as where:
            async with where.pool.acquire() as conn:
                requested = await erasure.request(conn, where.key, "acme", "user", "u-7")
            gate.go.set()
            outcome = await batch
            done = await erasure.run(where, requested.id)
            check = await erasure.verify(where, done.id, "u-7")
    assert (outcome.archived, outcome.messages, outcome.errors) == (len(roots), 0, 0)
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 0
    assert await thread_keys(admin, "acme/bob/c3") == set()
    assert check.ok


@pytest.mark.timeout(180)
async def test_verify_finds_a_document_and_a_pointer_left_of_an_erased_thread(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make()
    root = sorted([k async for k in admin.scan_iter(match="checkpoint:acme/bob/c4:__empty__:*")])
    document = await admin.json().get(root[-1])
    latest = "checkpoint_latest:acme/bob/c4:__empty__"
    pointer = str(await admin.get(latest))
    done = await erase(s, "acme", "conversation", "c4")
    assert (await verify(s, done, "c4")).ok
    await admin.json().set(root[-1], "$", document)  # written back from before the erasure
    await admin.set(latest, pointer)
    check = await verify(s, done, "c4")
    assert not check.ok
    assert check.places["redis_keys"] == 2


def _big_thread(url: str, thread: str) -> None:
    def bot(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("x" * (2 * 1024 * 1024))]}  # 2 MiB per reply

    graph = StateGraph(MessagesState)
    graph.add_node("bot", bot)
    graph.add_edge(START, "bot")
    graph.add_edge("bot", END)
    with lg.sync_saver(RedisSaver, url, TTL_MINUTES) as saver:
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        app = graph.compile(checkpointer=saver)
        for turn in range(2):  # most documents hold 2 or 4 MiB
            app.invoke({"messages": [HumanMessage(f"hi {turn}")]}, config)


@pytest.mark.timeout(180)
async def test_documents_past_the_inline_limit_are_judged_off_the_event_loop(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for thread in ("acme/anna/big", "acme/anna/big-2", "acme/bob/big"):
        await asyncio.to_thread(_big_thread, stack_admin_url, thread)
    offloaded: list[Any] = []

    async def to_thread(work: Callable[[], Any]) -> Any:
        offloaded.append(work)
        return await asyncio.to_thread(work)

    read = checkpoints.documents
    after_a_big_one: list[int] = []  # sizes of the groups read once a 2 MiB one was seen
    big = 2 * 1024 * 1024

    async def documents(cp: Any, keys: Any, *paths: str) -> Any:
        found = await read(cp, keys, *paths)
        if not paths and (after_a_big_one or any(len(v or b"") > big for v in found)):
            after_a_big_one.append(len(keys))
        return found

    monkeypatch.setattr(langgraph_side, "asyncio", SimpleNamespace(to_thread=to_thread))
    monkeypatch.setattr(checkpoints, "documents", documents)
    monkeypatch.setattr(langgraph_side, "GROUP", 2)
    done = await erase(make(batch_bytes=3 * 1024 * 1024), "acme", "customer", "anna")
    assert offloaded  # groups over DECODE_INLINE_BYTES went to a worker thread
    assert len(after_a_big_one) > 1  # at most 4 small documents of 12 come first
    assert set(after_a_big_one[1:]) == {1}  # then one document at a time (3 MiB budget)
    assert done.counts["redis_threads"] == 2
    assert not [k async for k in admin.scan_iter(match="*:acme/anna/big*")]
    assert [k async for k in admin.scan_iter(match="checkpoint:acme/bob/big:*")]


@pytest.mark.timeout(180)
async def test_the_periodic_job_resumes_a_request_as_the_erasures_user(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make()
    kept = await thread_keys(admin, "acme/anna/c2")
    async with service.connected(s) as parts:
        async with parts.pool.acquire() as conn:  # killed right after the tombstone
            requested = await erasure.request(conn, s.erasure_secret, "acme", "customer", "bob")
        outcome = await jobs.Runner(parts.jobs_pool, s).run(periodic.named(s, "erasure"))
        assert outcome is not None and outcome.status == "ok", outcome
        async with parts.pool.acquire() as conn:
            done = await erasure.status(conn, requested.id)
    assert done.status == "completed" and done.counts["redis_threads"] == 2
    assert await thread_keys(admin, "acme/bob/c3") == set()
    assert await thread_keys(admin, "acme/bob/c4") == set()
    assert await thread_keys(admin, "acme/anna/c2") == kept


@pytest.mark.timeout(180)
async def test_a_redis_step_cut_short_is_resumed_from_the_root_checkpoints_left(
    make: Callable[..., settings.Settings], stack_admin_url: str, admin: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make()
    delete = checkpoints.delete_keys
    calls: list[int] = []

    async def killed_after_the_first_chunk(cp: Any, keys: Any) -> Any:
        calls.append(len(keys))
        if len(calls) == 1:
            await delete(cp, [k for k in keys if not ROOT.fullmatch(k)])  # all but the roots
            raise Crash("redis")  # died before the root checkpoints went
        return await delete(cp, keys)

    monkeypatch.setattr(checkpoints, "delete_keys", killed_after_the_first_chunk)
    async with erasure.Surroundings.open(s) as where:
        async with where.pool.acquire() as conn:
            requested = await erasure.request(conn, where.key, "acme", "user", "u-8")
        with pytest.raises(Crash):
            await erasure.run(where, requested.id)
        assert await thread_keys(admin, "acme/anna/c2")  # the roots that name the user
        done = await erasure.run(where, requested.id)  # --resume
        check = await erasure.verify(where, done.id, "u-8")
    assert done.status == "completed"
    assert await thread_keys(admin, "acme/anna/c2") == set()
    assert await thread_keys(admin, "acme/anna/c1:x") == set()
    assert check.ok


class Crash(Exception):
    pass


async def test_the_archivers_own_user_cannot_erase_a_thread(
    make: Callable[..., settings.Settings], stack_admin_url: str, stack_url: str,
) -> None:  # fmt: skip
    await asyncio.to_thread(_write_threads, stack_admin_url)
    s = make(erasure_redis_url=None)  # archiver-langgraph: the thread families are read-only
    with pytest.raises(exceptions.ConfigError, match="ARCHIVER_ERASURE_REDIS_URL"):
        await erase(s, "acme", "conversation", "c2")


class Gate:
    """Holds an archive batch at a point until let go."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await self.go.wait()
