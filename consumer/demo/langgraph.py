"""`archiver demo --source langgraph-redis`: a real LangGraph graph archived live.

Each conversation is a LangGraph thread: a fake chat model (langchain_core's
GenericFakeChatModel) that calls a tool, a ToolNode that answers, the model's reply, for a
few turns, checkpointed by langgraph-checkpoint-redis's RedisSaver with a short TTL into a
Redis Stack. The consumer (ARCHIVER_SOURCE=langgraph-redis) runs in this process. The demo
ends once every key of its threads has expired, and checks with direct SQL that every message
id that ever appeared in a root checkpoint is in conversation_history exactly once.

langgraph, langgraph-checkpoint-redis and langchain-core are development dependencies
(`make install` installs them): imported here only when this demo runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from rich.console import Console

from consumer import exceptions, settings
from consumer.demo import command

TENANT = "demo"
PATTERN = r"(?P<tenant_id>[^/]+)/(?P<conversation_id>.+)"
SETTLE_S = 5.0  # after the last key expired: the last batch's commit
MISSING = (
    "the langgraph-redis demo needs langgraph, langgraph-checkpoint-redis and langchain-core"
    " (development dependencies: `make install`, or pip install -e '.[dev]')"
)
SQL_ROWS = """
SELECT conversation_id, message_key FROM conversation_history
WHERE tenant_id = $1 AND conversation_id = ANY($2::text[])
"""
SQL_SAMPLE = """
SELECT message_role, message_content, metadata->>'checkpoint_step' FROM conversation_history
WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY "timestamp", id
"""


@dataclass(frozen=True, slots=True)
class Plan:
    """How many threads, turns each, and a tag that keeps this run's threads apart."""

    conversations: int
    turns: int
    tag: str

    def conversation(self, index: int) -> str:
        return f"lg-{self.tag}-{index}"

    def thread(self, index: int) -> str:
        return f"{TENANT}/{self.conversation(index)}"


@dataclass(slots=True)
class Tally:
    """What the graph wrote: message ids seen in root checkpoints, by conversation."""

    expected: dict[str, set[str]] = field(default_factory=dict)
    written: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    expected: int
    found: int
    duplicates: int
    keys_left: int

    @property
    def nothing_lost(self) -> bool:
        return self.found == self.expected > 0 and self.duplicates == 0 and self.keys_left == 0


def demo_settings(o: command.Options, redis_url: str, database_url: str) -> settings.Settings:
    """The consumer's settings for the langgraph-redis source on the demo's clock."""
    return settings.load(
        redis_url=redis_url, database_url=database_url, source="langgraph-redis",
        thread_pattern=PATTERN, checkpoint_ttl=o.ttl, archive_after=o.archive_after,
        sweep_interval=o.sweep_interval, deadline_poll=max(0.01, min(0.5, o.buffer / 3)),
        report_interval=5.0, http_port=0, health_file=o.data_dir / "health.json",
        log_level=o.log_level, log_format="json",
    )  # fmt: skip


# --- the graph (imported lazily: development dependencies) --------------------------------------


def _replies(index: int, turns: int) -> list[Any]:
    from langchain_core.messages import AIMessage

    replies = []
    for turn in range(turns):
        call = {"name": "order_status", "args": {"order": f"{index}-{turn}"}, "id": f"call-{turn}"}
        replies.append(AIMessage("", tool_calls=[call]))
        replies.append(AIMessage(f"Order {index}-{turn} left the warehouse yesterday."))
    return replies


def graph(saver: Any, index: int, turns: int) -> Any:
    """The compiled graph of conversation `index`: its model answers `turns` questions, each
    by calling the order_status tool first (the fault harness drives it too)."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def order_status(order: str) -> str:
        """Where an order is."""
        return f"order {order}: shipped"

    model = GenericFakeChatModel(messages=iter(_replies(index, turns)))

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([order_status]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=saver)


def root_ids(history: Iterable[Any]) -> set[str]:
    """Every message id in the root checkpoints of a thread's history."""
    found = set()
    for item in history:
        if item.config["configurable"].get("checkpoint_ns", ""):
            continue
        for m in item.checkpoint["channel_values"].get("messages", []):
            found.add(str(m["kwargs"]["id"] if isinstance(m, dict) else m.id))
    return found


def ask(saver: Any, app: Any, thread: str, index: int, turn: int) -> set[str]:
    """One turn of a thread (a question, a tool call and its answer, a reply): the message ids
    its root checkpoints hold right after it."""
    from langchain_core.messages import HumanMessage

    config = {"configurable": {"thread_id": thread}}
    app.invoke({"messages": [HumanMessage(f"Where is order {index}-{turn}?")]}, config)
    return root_ids(saver.list(config))


def _converse(saver: Any, plan: Plan, index: int) -> set[str]:
    app = graph(saver, index, plan.turns)
    seen: set[str] = set()
    for turn in range(plan.turns):
        seen |= ask(saver, app, plan.thread(index), index, turn)
    return seen


def _write_all(redis_url: str, plan: Plan, ttl_s: float, tally: Tally) -> None:
    """Every conversation, one after another, through one RedisSaver (in a worker thread)."""
    try:
        from langgraph.checkpoint.redis import RedisSaver
    except ImportError:
        raise exceptions.ArchiverError(MISSING) from None
    with RedisSaver.from_conn_string(redis_url, ttl={"default_ttl": ttl_s / 60}) as saver:
        saver.setup()
        for index in range(plan.conversations):
            tally.expected[plan.conversation(index)] = _converse(saver, plan, index)
            tally.written += 1


# --- watching and the report ---------------------------------------------------------------------


async def _keys_left(client: aioredis.Redis, plan: Plan) -> int:
    match = f"*:{TENANT}/lg-{plan.tag}-*"
    return len([k async for k in client.scan_iter(match=match, count=1000)])


async def _watch(
    console: Console, client: aioredis.Redis, consumer: Any, plan: Plan, tally: Tally,
    writing: asyncio.Task[None], limit_s: float,
) -> None:  # fmt: skip
    """Progress lines until the threads are written and every key of them is gone."""
    started, emptied_at = time.monotonic(), None
    while True:
        if writing.done():
            writing.result()
        left = await _keys_left(client, plan)
        state = consumer.state
        console.print(
            f"[{time.monotonic() - started:6.1f}s] threads written {tally.written}"
            f"/{plan.conversations}, keys alive {left}, checkpoints archived"
            f" {state.checkpoints_archived}, messages {state.messages_archived}",
            markup=False,
        )
        if writing.done() and left == 0:
            emptied_at = emptied_at or time.monotonic()
            if time.monotonic() - emptied_at > SETTLE_S:
                return
        if time.monotonic() - started > limit_s:
            return
        await asyncio.sleep(1.0)


async def verdict(pool: asyncpg.Pool, client: aioredis.Redis, plan: Plan, tally: Tally) -> Verdict:
    rows = await pool.fetch(SQL_ROWS, TENANT, sorted(tally.expected))
    archived = [(r[0], r[1].removeprefix("id:")) for r in rows]
    expected = {(c, m) for c, ids in tally.expected.items() for m in ids}
    found = len(expected & set(archived))
    duplicates = len(archived) - len(set(archived))
    return Verdict(len(expected), found, duplicates, await _keys_left(client, plan))


async def _show(console: Console, pool: asyncpg.Pool, plan: Plan, v: Verdict) -> None:
    conversation = plan.conversation(0)
    console.print(f"\n{conversation}, read back from PostgreSQL:", markup=False)
    for role, content, step in await pool.fetch(SQL_SAMPLE, TENANT, conversation):
        shown = content[:70] or "(calls a tool)"
        console.print(f"  {role:<9} checkpoint step {step or '-':>2}  {shown}", markup=False)
    head = "nothing lost" if v.nothing_lost else "LOST"
    console.print(
        f"\n{head}: {v.found}/{v.expected} expected messages in conversation_history"
        f" ({v.duplicates} duplicates), Redis keys left: {v.keys_left}",
        markup=False,
    )


async def play(o: command.Options, s: settings.Settings, plan: Plan, console: Console) -> Verdict:
    """Migrate, run the consumer and the graph's threads, watch until their keys expired."""
    await command._migrate(s.database_url)
    client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=s.redis_timeout)
    tally = Tally()
    console.print(
        f"{plan.conversations} threads of a LangGraph graph (fake chat model, a tool round trip,"
        f" {plan.turns} turns) checkpointed by RedisSaver with a TTL of"
        f" {settings.format_duration(o.ttl)}; archived {settings.format_duration(o.buffer)}"
        " before their keys expire",
        markup=False,
    )
    try:
        await client.ping()
        async with command._consuming(s) as (consumer, running):
            writing = asyncio.create_task(
                asyncio.to_thread(_write_all, s.redis_url, plan, o.ttl, tally), name="graph"
            )
            limit = 60.0 + o.ttl + plan.conversations * plan.turns
            await _watch(console, client, consumer, plan, tally, writing, limit)
            command._raise_if_failed(running)
            result = await verdict(consumer.parts.pool, client, plan, tally)
            await _show(console, consumer.parts.pool, plan, result)
            return result
    finally:
        await client.aclose()
