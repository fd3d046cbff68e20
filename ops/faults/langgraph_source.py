"""Scenario `langgraph`: ARCHIVER_SOURCE=langgraph-redis under faults.

A LangGraph workload (consumer/demo/langgraph.py's graph: a fake chat model calling a tool
through a ToolNode, then replying) writes threads through langgraph-checkpoint-redis's
RedisSaver with a short TTL into a private Redis Stack, turn after turn, while `archiver run`
(as the ACL user archiver-langgraph, PostgreSQL role archiver_writer) archives them. Meanwhile
the archiver is SIGKILLed mid-batch (its insert caught waiting on a lock held by the harness,
then the kill) and restarted, again and again, and its pub/sub connection is killed
(CLIENT KILL TYPE pubsub) every 0.5-2 s. Once every key of the threads has expired, the
oracle: every message id that ever appeared in a root checkpoint of a thread is in
conversation_history exactly once, nothing else is, nothing was dead-lettered, and the
archiver's Redis user was refused nothing (ACL LOG).

It has a harness of its own (`run`): the seed-json workload, ledger and oracle of runner.py
do not apply to another source.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from consumer.demo import embedded as servers
from ops import redisacl, redisstack
from ops.faults import checker, hooks
from ops.faults.cluster import Cluster
from ops.faults.config import REDIS_PASSWORD, archiver_env
from ops.faults.procs import Fleet
from ops.faults.runner import Result, Run, Scenario, acl_denials, redis_command
from ops.faults.shapes import mix, windows

TENANT = "lg"
PATTERN = r"(?P<tenant_id>[^/]+)/(?P<conversation_id>.+)"
NOTIFICATIONS = "notify-keyspace-events Exgd"  # d: json.set (module events); g: expire
SQL_ROWS = "SELECT conversation_id, message_key FROM conversation_history WHERE tenant_id = $1"
SQL_DEAD = "SELECT count(*) FROM archive_dead_letters"


@dataclass(frozen=True, slots=True)
class Size:
    threads: int
    turns: int
    duration_s: float  # the turns are spread over this long
    kills: int


SIZES = {True: Size(threads=6, turns=2, duration_s=8.0, kills=2),
         False: Size(threads=40, turns=3, duration_s=30.0, kills=8)}  # fmt: skip


@dataclass(slots=True)
class Ledger:
    """Message ids seen in the root checkpoints, by conversation (written by the writer's
    thread, read once it finished)."""

    expected: dict[str, set[str]] = field(default_factory=dict)
    turns: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def _write(url: str, size: Size, ttl_s: float, ledger: Ledger, seed: int) -> None:
    """The application: every thread's turns, round after round, spread over the duration."""
    from langgraph.checkpoint.redis import RedisSaver

    from consumer.demo import langgraph

    pause = size.duration_s / max(1, size.threads * size.turns)
    try:
        with RedisSaver.from_conn_string(url, ttl={"default_ttl": ttl_s / 60}) as saver:
            saver.setup()
            apps = [langgraph.graph(saver, i, size.turns) for i in range(size.threads)]
            for turn in range(size.turns):
                for i, app in enumerate(apps):
                    conversation = f"t{seed}-{i}"
                    seen = langgraph.ask(saver, app, f"{TENANT}/{conversation}", i, turn)
                    ledger.expected.setdefault(conversation, set()).update(seen)
                    ledger.turns += 1
                    time.sleep(pause)
    finally:
        ledger.done.set()


async def _kill_mid_batch(fleet: Fleet, database_url: str, size: Size) -> dict[str, int]:
    """SIGKILL the archiver while a batch's insert waits on a lock the harness holds (or, if
    no batch comes within the patience, at that moment), then restart it."""
    caught = 0
    for _ in range(size.kills):
        proc = fleet.running("consumer") or fleet.start("consumer")
        await fleet.ready(proc)
        async with hooks.blocked_batch(database_url, patience=10.0) as waiting:
            fleet.kill(proc)
        caught += waiting
        fleet.start("consumer")
    return {"kills": size.kills, "kills_mid_batch": caught}


async def _kill_pubsub(client: aioredis.Redis, ledger: Ledger, rng: random.Random) -> int:
    kills = 0
    while not ledger.done.is_set():
        await redis_command(client, "CLIENT", "KILL", "TYPE", "pubsub")
        kills += 1
        await asyncio.sleep(rng.uniform(0.5, 2.0))
    return kills


async def _keys_left(client: aioredis.Redis, seed: int) -> int:
    return len([k async for k in client.scan_iter(match=f"*:{TENANT}/t{seed}-*", count=1000)])


async def _settle(client: aioredis.Redis, seed: int, patience: float) -> float:
    """Until every key of the threads has expired (or the patience ran out): seconds taken."""
    start = time.monotonic()
    while time.monotonic() - start < patience:
        if not await _keys_left(client, seed):
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - start, 1)


async def _verdict(database_url: str, ledger: Ledger) -> tuple[checker.Verdict, int]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(SQL_ROWS, TENANT)
        dead = int(await conn.fetchval(SQL_DEAD))
    finally:
        await conn.close()
    archived = [(r[0], r[1].removeprefix("id:")) for r in rows]
    expected = {(c, m) for c, ids in ledger.expected.items() for m in ids}
    found = set(archived)
    lost, unexpected = sorted(expected - found), sorted(found - expected)
    verdict = checker.Verdict(
        written_messages=len(expected), archived_messages=len(found & expected),
        dead_lettered_checkpoints=dead, lost=len(lost), duplicated=len(archived) - len(found),
        unexpected_rows=len(unexpected),
    )  # fmt: skip
    verdict.examples = {
        "lost": [f"{c}/{m}" for c, m in lost[: checker.EXAMPLES]],
        "unexpected": [f"{c}/{m}" for c, m in unexpected[: checker.EXAMPLES]],
    }
    return verdict, dead


def _stack(workdir: Path) -> servers.RedisServer:
    # Redis Stack is 7.4: +client|setinfo, as ops/redis-acl.conf advises for Redis >= 7.2
    # (redis-py sends CLIENT SETINFO on connect; a refusal would only fill ACL LOG).
    user = redisacl.user_line(REDIS_PASSWORD, redisacl.LANGGRAPH_USER) + " +client|setinfo"
    acl = (NOTIFICATIONS, user)
    server = servers.RedisServer(
        workdir / "redis", extra_config=acl, binary=redisstack.ensure(),
        modules=redisstack.modules(),
    )  # fmt: skip
    server.start()
    return server


async def run(
    cluster: Cluster, scenario: Scenario, quick: bool, seed: int, workdir: Path, result: Result
) -> None:
    size, w = SIZES[quick], scenario.windows
    database_url = await cluster.database(scenario.name)
    redis = _stack(workdir)
    client = aioredis.Redis.from_url(redis.url, socket_timeout=3, socket_connect_timeout=3)
    redis_url = redisacl.url(redis.port, REDIS_PASSWORD, user=redisacl.LANGGRAPH_USER)
    writer_url = cluster.writer_url(database_url)

    def env(name: str) -> dict[str, str]:
        health = workdir / f"{name}.health.json"
        return archiver_env(w, redis_url, writer_url, health) | {
            "ARCHIVER_SOURCE": "langgraph-redis", "ARCHIVER_THREAD_PATTERN": PATTERN,
        }  # fmt: skip

    fleet = Fleet(workdir / "procs", env)
    ledger, rng = Ledger(), random.Random(seed)
    supervisor = asyncio.create_task(fleet.supervise(["consumer"]), name="supervisor")
    try:
        await fleet.ready(fleet.start("consumer"))
        writing = asyncio.create_task(
            asyncio.to_thread(_write, redis.url, size, w.ttl, ledger, seed)
        )
        killed, pubsub = await asyncio.gather(
            _kill_mid_batch(fleet, database_url, size), _kill_pubsub(client, ledger, rng)
        )
        await writing
        result.faults |= killed | {"pubsub_kills": pubsub}
        result.faults["settle_s"] = await _settle(client, seed, scenario.settle_s + w.ttl)
        await _stop_supervising(supervisor)
        fleet.stop_all()
        result.verdict, dead = await _verdict(database_url, ledger)
        denials = await acl_denials(client, redisacl.LANGGRAPH_USER)
        result.checks |= {
            "every_key_expired": not await _keys_left(client, seed),
            "no_dead_letters": dead == 0,
            "no_acl_denials": not denials,
            "a_kill_landed_mid_batch": killed["kills_mid_batch"] > 0,
            "pubsub_killed": pubsub > 0,
        }
        result.verdict.examples["acl_denials"] = denials[: checker.EXAMPLES]
        result.workload = {"threads": size.threads, "turns": ledger.turns,
                           "message_ids": result.verdict.written_messages}  # fmt: skip
        result.crashes = fleet.crashes
    finally:
        await _stop_supervising(supervisor)
        fleet.stop_all()
        await client.aclose()
        redis.stop()


async def _stop_supervising(supervisor: asyncio.Task[None]) -> None:
    """Before the archivers are stopped: a stopped one is no crash to restart."""
    supervisor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await supervisor


async def _unused(run_: Run) -> None:  # the Scenario's inject: this harness injects itself
    await asyncio.sleep(0)


def scenario(quick: bool) -> Scenario:
    """TTL 15 s (quick; 20 s full), archived 8 s before expiry: a restarted archiver has the
    time to start on a loaded machine."""
    return Scenario(
        "langgraph",
        "LangGraph threads via RedisSaver into Redis Stack; SIGKILL mid-batch, pub/sub killed",
        windows(quick, ttl=15.0, archive_after=7.0) if quick else windows(quick),
        mix(quick), _unused, settle_s=30.0, runner=run,
    )  # fmt: skip
