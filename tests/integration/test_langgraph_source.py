"""ARCHIVER_SOURCE=langgraph-redis against the real thing: a LangGraph graph (a fake chat model
with a tool round trip, a subgraph, a step that removes messages) checkpointed by
langgraph-checkpoint-redis's RedisSaver, AsyncRedisSaver and ShallowRedisSaver with a short TTL
into Redis Stack, while `archiver run` (as the least-privilege ACL user) archives it. Every
message id that ever appeared in a root checkpoint must be archived exactly once, with the
identity mapping applied, by the time its keys have expired."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.redis import RedisSaver
from langgraph.checkpoint.redis.aio import AsyncRedisSaver
from langgraph.checkpoint.redis.shallow import ShallowRedisSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from consumer import service, settings
from tests.waiting import eventually

TTL_MINUTES = 0.1  # the savers take minutes: 6 s
WINDOWS = {
    "checkpoint_ttl": "6s",
    "archive_after": "3s",
    "sweep_interval": "1s",
    "deadline_poll": "0.2s",
    "db_retry_delay": "0.1s",
    "ping_interval": "0.5s",
    "selftest_timeout": "2s",
    "batch_wait": "0.01s",
    "http_port": 0,
    "run_jobs": False,
}
PATTERN = r"(?P<tenant_id>[^/]+)/(?P<conversation_id>.+)"


class State(MessagesState):
    user: dict[str, str]


@tool
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order} shipped"


def _model() -> GenericFakeChatModel:
    replies = iter(
        [
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"order": "42"}, "id": "call-1"}]),
            AIMessage("Your order 42 has shipped."),
            AIMessage("Anything else?"),
        ]
    )
    return GenericFakeChatModel(messages=replies)


def build(saver: Any) -> Any:
    model = _model()

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def inner(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("(checked by the subgraph)")]}

    sub = StateGraph(MessagesState)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    sub.add_edge("inner", END)

    def summarize(state: State) -> dict[str, Any]:
        first_two = [RemoveMessage(id=m.id) for m in state["messages"][:2] if m.id]
        return {"messages": [*first_two, SystemMessage("Summary: order 42 asked about.")]}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_node("review", sub.compile())
    graph.add_node("summarize", summarize)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: "review"})
    graph.add_edge("tools", "agent")
    graph.add_edge("review", "summarize")
    graph.add_edge("summarize", END)
    return graph.compile(checkpointer=saver)


def _first_turn() -> dict[str, Any]:
    return {"messages": [HumanMessage("Where is order 42?")], "user": {"id": "u-7"}}


def _second_turn() -> dict[str, Any]:
    return {"messages": [HumanMessage("Thanks!")]}


def _ids(history: list[Any]) -> set[str]:
    """Every message id in the root checkpoints of a thread's history."""
    ids = set()
    for item in history:
        if item.config["configurable"].get("checkpoint_ns", ""):
            continue
        ids |= {_id(m) for m in item.checkpoint["channel_values"].get("messages", [])}
    return ids


def _id(message: Any) -> str:
    """A message's id, whether the saver revived it or left its constructor dict."""
    if isinstance(message, dict):
        return str(message["kwargs"]["id"])
    return str(message.id)


@contextlib.contextmanager
def sync_saver(kind: type[Any], url: str, ttl: float = TTL_MINUTES) -> Iterator[Any]:
    with kind.from_conn_string(url, ttl={"default_ttl": ttl}) as saver:
        saver.setup()
        yield saver


def _run_sync(kind: type[Any], url: str, thread: str, ttl: float = TTL_MINUTES) -> set[str]:
    with sync_saver(kind, url, ttl) as saver:
        app = build(saver)
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        app.invoke(_first_turn(), config)
        seen = _ids(list(saver.list(config)))
        app.invoke(_second_turn(), config)
        return seen | _ids(list(saver.list(config)))


async def _run_async(url: str, thread: str) -> set[str]:
    async with AsyncRedisSaver.from_conn_string(url, ttl={"default_ttl": TTL_MINUTES}) as saver:
        await saver.asetup()
        app = build(saver)
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        await app.ainvoke(_first_turn(), config)
        await app.ainvoke(_second_turn(), config)
        return _ids([item async for item in saver.alist(config)])


@contextlib.asynccontextmanager
async def archiver(config: settings.Settings) -> AsyncIterator[service.Consumer]:
    async with service.connected(config) as parts:
        consumer = service.Consumer(parts)
        task = asyncio.create_task(consumer.run())
        try:
            yield consumer
        finally:
            consumer.stopping.set()
            await asyncio.wait_for(task, timeout=30)


MakeSettings = Callable[..., settings.Settings]


@pytest.fixture
def make_lg(stack_url: str, database_url: str, tmp_path: Path) -> MakeSettings:
    """Settings of the langgraph-redis source on the private servers; keywords override."""

    def make(**overrides: Any) -> settings.Settings:
        return settings.load(**({
            "redis_url": stack_url, "database_url": database_url,
            "health_file": tmp_path / "health.json", "source": "langgraph-redis",
            "thread_pattern": PATTERN, "state_fields": "user_id=user.id",
            "configure_notifications": False,
        } | WINDOWS | overrides))  # fmt: skip

    return make


@pytest.fixture
def lg_settings(make_lg: MakeSettings) -> settings.Settings:
    return make_lg()


async def _all_expired(admin: aioredis.Redis, thread: str) -> bool:
    found = [k async for k in admin.scan_iter(match=f"checkpoint:{thread}:*", count=1000)]
    return not found and not await admin.exists(f"checkpoint:{thread}:")


async def _archived(db: asyncpg.Connection, conversation: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT tenant_id, user_id, message_key, message_role, metadata"
        " FROM conversation_history WHERE conversation_id = $1",
        conversation,
    )


async def _check(
    db: asyncpg.Connection, admin_url: str, thread: str, expected: set[str], exact: bool
) -> None:
    admin = aioredis.Redis.from_url(admin_url)
    try:
        await eventually(lambda: _all_expired(admin, thread), 30, "every checkpoint expired")
    finally:
        await admin.aclose()
    rows = await _archived(db, thread.split("/", 1)[1])
    keys = [r["message_key"] for r in rows]
    assert len(keys) == len(set(keys)), "a message was archived twice"
    archived = {k.removeprefix("id:") for k in keys}
    if exact:
        assert archived == expected
    else:  # ShallowRedisSaver: every state the archiver could observe, the final one at least
        assert expected <= archived
    assert {(r["tenant_id"], r["user_id"]) for r in rows} == {("acme", "u-7")}
    roles = {r["message_role"] for r in rows}
    assert {"user", "assistant", "system"} <= roles
    if exact:  # the tool message was removed later: only older checkpoints held it
        assert "tool" in roles


@pytest.mark.timeout(120)
async def test_redis_saver_every_message_archived_once(
    lg_settings: settings.Settings, stack_admin_url: str, stack_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/sync-1"
    async with archiver(lg_settings):
        expected = await asyncio.to_thread(_run_sync, RedisSaver, stack_admin_url, thread)
        await _check(db, stack_admin_url, thread, expected, exact=True)
    assert len(expected) >= 9  # the removed messages are part of it


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:get_async_redis_connection:DeprecationWarning")
async def test_async_redis_saver_every_message_archived_once(
    lg_settings: settings.Settings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/async-1"
    async with archiver(lg_settings):
        expected = await _run_async(stack_admin_url, thread)
        await _check(db, stack_admin_url, thread, expected, exact=True)


@pytest.mark.timeout(120)
async def test_shallow_redis_saver_final_state_archived_once(
    lg_settings: settings.Settings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/shallow-1"
    async with archiver(lg_settings):
        expected = await asyncio.to_thread(_run_sync, ShallowRedisSaver, stack_admin_url, thread)
        await _check(db, stack_admin_url, thread, expected, exact=False)


async def test_a_has_writes_stub_is_retried_not_dead_lettered(
    lg_settings: settings.Settings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    key = "checkpoint:acme/stub-1:__empty__:1f1f28dd-7d29-683d-8000-ded32a568d5d"
    admin = aioredis.Redis.from_url(stack_admin_url)
    try:
        await admin.json().set(key, "$", {"has_writes": True})
        await admin.pexpire(key, 2000)  # due at once (under the 3 s buffer)
        async with service.connected(lg_settings) as parts:
            report = await parts.sweeper.sweep()
        assert (report.due, report.outcome.dead_letters, report.outcome.errors) == (1, 0, 0)
        assert await db.fetchval("SELECT count(*) FROM archive_dead_letters") == 0
        due = await admin.zscore(parts.archiver.redis.layout.deadlines, key)
        assert due is not None  # scheduled again
    finally:
        await admin.aclose()


def _chat(saver: Any, thread: str, turns: int) -> list[Any]:
    """A plain chatbot thread of `turns` turns; its root checkpoints' message lists."""

    def bot(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"reply {len(state['messages'])}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("bot", bot)
    graph.add_edge(START, "bot")
    graph.add_edge("bot", END)
    app = graph.compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    for turn in range(turns):
        app.invoke({"messages": [HumanMessage(f"question {turn}")]}, config)
    return [item.checkpoint["channel_values"].get("messages", []) for item in saver.list(config)]


@pytest.mark.timeout(120)
async def test_a_thread_of_n_checkpoints_sends_each_message_once_not_n_squared(
    make_lg: MakeSettings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    turns = 20
    with sync_saver(RedisSaver, stack_admin_url) as saver:
        lists = await asyncio.to_thread(_chat, saver, "acme/long-1", turns)
    cumulative = sum(len(messages) for messages in lists)
    # Every checkpoint is due at once (TTL 6 s, archive 1 s after writing); batches of 8.
    async with service.connected(make_lg(archive_after="1s", batch_size=8)) as parts:
        sent: list[int] = []
        write = parts.store.write

        async def counting(batch: Any, dead: Any, resolved: Any = ()) -> dict[str, int]:
            sent.append(sum(len(c.messages) for c in batch))
            return await write(batch, dead, resolved)

        parts.store.write = counting  # type: ignore[method-assign]
        report = await parts.sweeper.sweep()
    assert report.outcome.archived == len(lists) == 3 * turns
    assert sum(sent) == 2 * turns < cumulative  # each message once, not once per checkpoint
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 2 * turns


async def _thread_keys(admin_url: str, thread: str) -> list[bytes]:
    """Every key of a thread, all families (checkpoint, checkpoint_latest, checkpoint_write,
    write_keys_zset, write_registry)."""
    admin = aioredis.Redis.from_url(admin_url)
    try:
        found = [k async for k in admin.scan_iter(match=f"*:{thread}:*", count=1000)]
        return sorted(k for k in found if not k.startswith(b"archiver:"))  # not our shadows
    finally:
        await admin.aclose()


def _families(found: list[bytes]) -> set[str]:
    return {k.decode().partition(":")[0] for k in found}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", [RedisSaver, ShallowRedisSaver], ids=["full", "shallow"])
async def test_delete_archived_deletes_a_whole_thread_once_its_latest_is_archived(
    kind: type[Any], make_lg: MakeSettings, stack_delete_url: str, stack_admin_url: str,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    thread = f"acme/delete-{kind.__name__}"
    expected = await asyncio.to_thread(_run_sync, kind, stack_admin_url, thread)
    before = _families(await _thread_keys(stack_admin_url, thread))
    assert {"checkpoint", "checkpoint_write"} <= before  # with a subgraph's and pending writes
    config = make_lg(redis_url=stack_delete_url, archive_after="1s", delete_archived=True)
    async with service.connected(config) as parts:
        report = await parts.sweeper.sweep()
        assert report.outcome.archived >= 1
        assert await _thread_keys(stack_admin_url, thread) == []  # every family, all of them
        redis = parts.archiver.redis
        assert await redis.client.zcard(redis.layout.deadlines) == 0
        ours = [k async for k in redis.client.scan_iter(match=f"archiver:*{thread}*")]
        assert ours == []  # shadows ("done"), claims and hold marks too
    rows = await _archived(db, thread.split("/", 1)[1])
    keys = [r["message_key"].removeprefix("id:") for r in rows]
    assert len(keys) == len(set(keys))
    if kind is RedisSaver:
        assert set(keys) == expected
    else:
        assert expected <= set(keys)


@pytest.mark.timeout(120)
async def test_delete_archived_never_deletes_a_thread_that_moved_on(
    make_lg: MakeSettings, stack_delete_url: str, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/moved-on"
    with sync_saver(RedisSaver, stack_admin_url) as saver:
        await asyncio.to_thread(_chat, saver, thread, 1)
    config = make_lg(redis_url=stack_delete_url, archive_after="1s", delete_archived=True)
    async with service.connected(config) as parts:
        checkpoints = parts.archiver.redis
        delete_thread = checkpoints._delete_thread
        results: list[int] = []

        async def moving_on(*args: Any) -> int:
            """After the thread's keys are listed, before the compare-and-delete, the
            application writes the thread's next turn."""
            if not results:
                with sync_saver(RedisSaver, stack_admin_url) as saver:
                    await asyncio.to_thread(_chat, saver, thread, 1)
            results.append(await delete_thread(*args))
            return results[-1]

        checkpoints._delete_thread = moving_on  # type: ignore[method-assign,assignment]
        first = await parts.sweeper.sweep()
        assert first.outcome.archived == 3 and results == [0]  # moved on: kept
        kept = await _thread_keys(stack_admin_url, thread)
        assert len([k for k in kept if k.startswith(b"checkpoint:")]) == 6  # nothing deleted
        archived = []

        async def swept() -> bool:  # once the new turn is due, the thread goes
            archived.append((await parts.sweeper.sweep()).outcome.archived)
            return await _thread_keys(stack_admin_url, thread) == []

        await eventually(swept, 30, "the thread deleted")
        assert sum(archived) == 3 and results == [0, 1]
    keys = [r["message_key"] for r in await _archived(db, "moved-on")]
    assert len(keys) == len(set(keys)) == 4  # two turns of a question and a reply, once each


@pytest.mark.timeout(120)
async def test_a_latest_archived_before_an_older_checkpoint_deletes_its_thread_on_retry(
    make_lg: MakeSettings, stack_delete_url: str, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/latest-first"
    with sync_saver(RedisSaver, stack_admin_url) as saver:
        await asyncio.to_thread(_chat, saver, thread, 1)
    admin = aioredis.Redis.from_url(stack_admin_url)
    config = make_lg(
        redis_url=stack_delete_url, archive_after="1s", delete_archived=True, claim_ttl="1s"
    )
    try:
        latest = cast(bytes, await admin.get(f"checkpoint_latest:{thread}:__empty__")).decode()
        async with service.connected(config) as parts:
            outcome = await parts.archiver.archive([latest], parts.sweeper.window.due_ms)
            assert outcome.archived == 1  # the older two are not archived yet: kept, retried
            assert len(await _thread_keys(stack_admin_url, thread)) > 1
            assert await admin.get(parts.archiver.redis.layout.shadow(latest)) == b""
            assert await admin.zscore(parts.archiver.redis.layout.deadlines, latest) is not None

            async def swept() -> bool:
                await parts.sweeper.sweep()
                return await _thread_keys(stack_admin_url, thread) == []

            await eventually(swept, 30, "the thread deleted once every checkpoint is archived")
    finally:
        await admin.aclose()
    keys = [r["message_key"] for r in await _archived(db, "latest-first")]
    assert len(keys) == len(set(keys)) == 2


@pytest.mark.timeout(120)
async def test_a_thread_whose_keys_cannot_be_listed_is_left_to_its_ttl(
    make_lg: MakeSettings, stack_delete_url: str, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/unlisted"
    with sync_saver(RedisSaver, stack_admin_url) as saver:
        await asyncio.to_thread(_chat, saver, thread, 1)
    admin = aioredis.Redis.from_url(stack_admin_url)
    try:
        await admin.ft("checkpoint").dropindex()  # its documents stay
    finally:
        await admin.aclose()
    before = await _thread_keys(stack_admin_url, thread)
    config = make_lg(redis_url=stack_delete_url, archive_after="1s", delete_archived=True)
    async with service.connected(config) as parts:
        report = await parts.sweeper.sweep()
    assert (report.outcome.archived, report.outcome.errors) == (3, 0)
    assert await _thread_keys(stack_admin_url, thread) == before  # nothing deleted
    assert len(await _archived(db, "unlisted")) == 2


@pytest.mark.timeout(120)
async def test_refresh_on_read_is_archived_once_and_no_ttl_is_ever_shortened(
    lg_settings: settings.Settings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    thread = "acme/refresh-1"
    ttl = {"default_ttl": TTL_MINUTES, "refresh_on_read": True}
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    admin = aioredis.Redis.from_url(stack_admin_url)
    pointer = f"checkpoint_latest:{thread}:__empty__"
    expiries: dict[str, list[int]] = {}

    async def read_and_note() -> None:
        """The application reads the thread (which extends its latest checkpoint's TTL); each
        key's expiry time (PEXPIRETIME, absolute) is noted."""
        await asyncio.to_thread(saver.get_tuple, config)
        found = await admin.get(pointer)
        latest = found.decode() if isinstance(found, bytes) else ""
        for key in (latest, pointer):
            if key:
                expiries.setdefault(key, []).append(int(await admin.pexpiretime(key)))

    async def older_ones_archived() -> bool:
        await read_and_note()
        return bool(await _archived(db, "refresh-1"))

    try:
        with RedisSaver.from_conn_string(stack_admin_url, ttl=ttl) as saver:
            saver.setup()
            async with archiver(lg_settings):
                expected = await asyncio.to_thread(_run_sync_with, saver, thread)
                # While the latest checkpoint is kept alive by reads, the older ones come due
                # and are archived; then the reads stop and everything expires.
                await eventually(older_ones_archived, 30, "older checkpoints archived")
                for _ in range(3):
                    await read_and_note()
                await _check(db, stack_admin_url, thread, expected, exact=True)
    finally:
        await admin.aclose()
    assert expiries and all(times == sorted(times) for times in expiries.values())
    assert all(t > 0 for times in expiries.values() for t in times)  # a TTL, never removed


def _run_sync_with(saver: Any, thread: str) -> set[str]:
    app = build(saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    app.invoke(_first_turn(), config)
    seen = _ids(list(saver.list(config)))
    app.invoke(_second_turn(), config)
    return seen | _ids(list(saver.list(config)))


@contextlib.contextmanager
def archiver_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


async def _count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM conversation_history"))


@pytest.mark.timeout(180)
async def test_kill9_and_a_killed_subscription_lose_and_duplicate_nothing(
    stack_url: str, stack_admin_url: str, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # A longer TTL (15 s, archived 10 s before expiry): a restarted process must start up in
    # time on a loaded machine. Each process is subscribed before the thread is written.
    values = WINDOWS | {
        "checkpoint_ttl": "15s", "archive_after": "5s", "claim_ttl": "1s", "sweep_lease": "2s",
        "log_format": "json",
    }  # fmt: skip
    env = os.environ | {f"ARCHIVER_{k.upper()}": str(v) for k, v in values.items()} | {
        "ARCHIVER_REDIS_URL": stack_url, "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_SOURCE": "langgraph-redis", "ARCHIVER_THREAD_PATTERN": PATTERN,
        "ARCHIVER_STATE_FIELDS": "user_id=user.id", "ARCHIVER_CONFIGURE_NOTIFICATIONS": "false",
        "ARCHIVER_HEALTH_FILE": str(tmp_path / "health.json"),
    }  # fmt: skip
    log = tmp_path / "archiver.log"
    admin = aioredis.Redis.from_url(stack_admin_url)
    try:
        with archiver_process(env, log) as first:
            await eventually(lambda: _subscribed(admin), 60, "the archiver subscribed")
            expected_killed = await asyncio.to_thread(
                _run_sync, RedisSaver, stack_admin_url, "acme/kill-1", 0.25
            )
            await eventually(lambda: _positive(_count(db)), 30, "a first archived row")
            first.send_signal(signal.SIGKILL)  # while the rest of the thread comes due
            first.wait(timeout=10)
        await eventually(lambda: _unsubscribed(admin), 30, "the killed archiver's connection gone")
        with archiver_process(env, log):
            await eventually(lambda: _subscribed(admin), 60, "the new archiver subscribed")
            await admin.client_kill_filter(_type="pubsub")
            expected = await asyncio.to_thread(
                _run_sync, RedisSaver, stack_admin_url, "acme/kill-2", 0.25
            )
            await _check(db, stack_admin_url, "acme/kill-1", expected_killed, exact=True)
            await _check(db, stack_admin_url, "acme/kill-2", expected, exact=True)
    finally:
        await admin.aclose()


async def _positive(count: Awaitable[int]) -> bool:
    return await count > 0


async def _subscribed(admin: aioredis.Redis) -> bool:
    return bool(await admin.client_list(_type="pubsub"))


async def _unsubscribed(admin: aioredis.Redis) -> bool:
    return not await _subscribed(admin)


async def test_a_checkpoint_without_ttl_is_archived_by_its_id_time_and_kept(
    make_lg: MakeSettings, stack_admin_url: str, db: asyncpg.Connection
) -> None:
    ident = "1f1f28dd-7d29-683d-8000-ded32a568d5d"  # a UUID v6 of 2026-12-07T22:30:45Z
    key = f"checkpoint:acme/no-ttl:__empty__:{ident}"
    human = {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages",
             "HumanMessage"], "kwargs": {"content": "hi", "type": "human", "id": "h-1"}}  # fmt: skip
    doc: dict[str, Any] = {"thread_id": "acme/no-ttl", "checkpoint_ns": "__empty__", "checkpoint_id": ident,
           "metadata": "{}", "checkpoint": {"ts": "2026-12-07T22:30:45+00:00", "id": ident,
           "channel_values": {"messages": [human], "user": {"id": "u-7"}}}}  # fmt: skip
    admin = aioredis.Redis.from_url(stack_admin_url)
    try:
        await admin.json().set(key, "$", doc)
        async with service.connected(make_lg(archive_after="1s")) as parts:
            first = await parts.sweeper.sweep()
            again = await parts.sweeper.sweep()  # archived already: left alone
        assert (first.outcome.archived, again.due, again.outcome.archived) == (1, 0, 0)
        assert await admin.exists(key)  # the application's, until it deletes it
    finally:
        await admin.aclose()
    assert await db.fetchval("SELECT message_key FROM conversation_history") == "id:h-1"
