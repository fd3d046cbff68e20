"""Scenario `api`: the History API under load, next to a floor of the same queries.

N messages (100 per conversation) over 3 tenants, loaded by COPY (ops/seed.py), about ten
conversations per user. `archiver api` runs as its own role (archiver_api, row-level security)
on loopback; a load generator in this process sends requests at a fixed rate (open loop: each
latency counts from the moment the request was due, so a slow answer also delays the next ones'
figures, as clients would see it), cycling through three kinds of request of random subjects of
the three tenants:

* conversation_page: GET /v1/conversations/{id}/messages (50 messages);
* customer_page: GET /v1/customers/{id}/messages (50 messages);
* profile: GET /v1/users/{id}/profile.

Two seconds of it first warm the API up (its pool opens connections on demand); they are not
counted. Then as fast as 8 concurrent clients can (closed loop): requests/s. The floor: the same
transactions (the key check that names the tenant, then the same named query) over one bare
asyncpg connection as the same role, one after the other, measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from consumer import apikeys, queries
from consumer.api import app
from consumer.demo import embedded as servers
from ops import seed

from . import probes, procs
from .common import Context, Result, pg_connection

TENANTS = ("t0", "t1", "t2")
PER_CONVERSATION = 100
PAGE = 50
SAMPLE = 500  # subjects per tenant and kind drawn from
KINDS = ("conversation_page", "customer_page", "profile")
Timed = dict[str, list[float]]  # kind -> latencies (ms)
CONCURRENCY = 8
START_S = 60.0
WARM_S = 2.0  # of load before measuring, not counted


@dataclass(frozen=True, slots=True)
class Subjects:
    """Per tenant: its key and some of its conversations, customers and users."""

    keys: dict[str, str]
    ids: dict[tuple[str, str], list[str]]  # (tenant, kind) -> ids

    def pick(self, rng: random.Random, kind: str) -> tuple[str, str]:
        tenant = rng.choice(TENANTS)
        return tenant, rng.choice(self.ids[(tenant, kind)])


def path_of(kind: str, subject: str) -> str:
    return {
        "conversation_page": f"/v1/conversations/{subject}/messages?limit={PAGE}",
        "customer_page": f"/v1/customers/{subject}/messages?limit={PAGE}",
        "profile": f"/v1/users/{subject}/profile",
    }[kind]


async def run(ctx: Context) -> Result:
    admin = await ctx.stack.fresh_database("api")
    name = admin.rsplit("/", 1)[1]
    owner, role = ctx.stack.pg.dsn(name, servers.PG_OWNER), ctx.stack.pg.dsn(name, servers.PG_API)
    started = time.monotonic()
    loaded = await _seed(admin, ctx.cfg.api_rows)
    seeded_s = round(time.monotonic() - started, 1)
    subjects = await _subjects(admin, owner)
    floor = await _floor(role, subjects, int(ctx.cfg.api_rate * ctx.cfg.api_seconds))
    async with _served(ctx, role) as base:
        warm = min(WARM_S, ctx.cfg.api_seconds)  # the pool opens its connections
        await _paced(base, subjects, ctx.cfg.api_rate, warm)
        paced = await _paced(base, subjects, ctx.cfg.api_rate, ctx.cfg.api_seconds)
        capacity = await _capacity(base, subjects, ctx.cfg.api_seconds)
    return _result(loaded, seeded_s, floor, paced, capacity, ctx.cfg.api_rate)


# --- data ----------------------------------------------------------------------------------------


async def _seed(dsn: str, rows: int) -> seed.Loaded:
    shape = seed.Shape(
        TENANTS, months=3, rows=rows, per_conversation=PER_CONVERSATION, crossing=False
    )
    async with pg_connection(dsn) as conn:
        loaded = await seed.load(conn, shape, datetime.now(UTC), prefix="api")
        await conn.execute(
            "UPDATE conversations SET user_id = 'user-' || tenant_id || '-'"
            " || (abs(hashtext(conversation_id)) % greatest(1, $1::int / 30))",
            loaded.conversations,
        )
        await conn.execute("VACUUM (ANALYZE) conversation_history")
        await conn.execute("VACUUM (ANALYZE) conversations")
    return loaded


async def _subjects(admin: str, owner: str) -> Subjects:
    ids: dict[tuple[str, str], list[str]] = {}
    async with pg_connection(admin) as conn:
        for tenant in TENANTS:
            rows = await conn.fetch(
                "SELECT conversation_id, customer_id, user_id FROM conversations"
                " WHERE tenant_id = $1 ORDER BY random() LIMIT $2", tenant, SAMPLE,
            )  # fmt: skip
            for kind, column in zip(
                KINDS, ("conversation_id", "customer_id", "user_id"), strict=True
            ):
                ids[(tenant, kind)] = [r[column] for r in rows]
    async with pg_connection(owner) as conn:
        keys = {t: (await apikeys.create(conn, t, "bench", ["read"], None)).key for t in TENANTS}
    return Subjects(keys, ids)


# --- the floor: the same transactions over a bare connection --------------------------------------


def _floor_query(kind: str) -> tuple[str, Callable[[str, str], tuple[Any, ...]]]:
    if kind == "conversation_page":
        return queries.get("api_conversation_messages_page"), lambda t, s: (
            t,
            s,
            None,
            None,
            PAGE + 1,
        )
    if kind == "customer_page":
        return queries.get("api_customer_messages_page"), lambda t, s: (
            t,
            s,
            None,
            None,
            None,
            None,
            PAGE + 1,
        )
    return queries.get("api_user_profile"), lambda t, s: (t, s)


async def _floor(dsn: str, subjects: Subjects, count: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    found: Timed = {kind: [] for kind in KINDS}
    conn = await asyncpg.connect(dsn, server_settings=app.SERVER_SETTINGS)
    try:
        for i in range(count):
            kind = KINDS[i % len(KINDS)]
            tenant, subject = subjects.pick(rng, kind)
            sql, args = _floor_query(kind)
            began = time.perf_counter()
            async with conn.transaction(readonly=True):
                await conn.fetchrow(
                    queries.get("api_authenticate"), apikeys.digest(subjects.keys[tenant])
                )
                await conn.fetch(sql, *args(tenant, subject))
            found[kind].append((time.perf_counter() - began) * 1000)
    finally:
        await conn.close()
    return found


# --- the API under load --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _served(ctx: Context, role: str) -> AsyncIterator[str]:
    port = servers.free_port()
    env = ctx.env("api", role, api_database_url=role, api_port=port, api_pool_size=10)
    proc = procs.spawn(
        [sys.executable, "-m", "consumer", "api"], env, ctx.folder("api") / "api.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError("archiver api exited: see api/api.log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/readyz") as reply:
                        return reply.status == 200
                return False

            await probes.wait_for(ready, START_S, "archiver api ready")
        yield base
    finally:
        await procs.stop(proc)


async def _one(session: aiohttp.ClientSession, base: str, subjects: Subjects, kind: str,
               rng: random.Random) -> bool:  # fmt: skip
    tenant, subject = subjects.pick(rng, kind)
    headers = {"Authorization": f"Bearer {subjects.keys[tenant]}"}
    async with session.get(base + path_of(kind, subject), headers=headers) as reply:
        await reply.read()
        return reply.status == 200


async def _paced(
    base: str, subjects: Subjects, rate: int, seconds: float
) -> tuple[Timed, int, float]:
    """`rate` requests/s for `seconds`: latencies from each request's due moment, errors."""
    rng = random.Random(11)
    timed: Timed = {kind: [] for kind in KINDS}
    errors = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(kind: str, due: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            ok = await _one(session, base, subjects, kind, rng)
            timed[kind].append((time.perf_counter() - due) * 1000)
            errors += not ok

        t0 = time.perf_counter() + 0.1
        total = int(rate * seconds)
        await asyncio.gather(*(send(KINDS[i % 3], t0 + i / rate) for i in range(total)))
        took = time.perf_counter() - t0
    return timed, errors, total / took


async def _capacity(base: str, subjects: Subjects, seconds: float) -> float:
    """Requests/s that CONCURRENCY clients get, each sending the next as soon as answered."""
    rng, done = random.Random(13), 0
    async with aiohttp.ClientSession() as session:
        stop = time.perf_counter() + seconds

        async def client(n: int) -> None:
            nonlocal done
            i = n
            while time.perf_counter() < stop:
                await _one(session, base, subjects, KINDS[i % 3], rng)
                done, i = done + 1, i + 1

        began = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(CONCURRENCY)))
        return done / (time.perf_counter() - began)


# --- results -------------------------------------------------------------------------------------


def _result(loaded: seed.Loaded, seeded_s: float, floor: Timed, paced: tuple[Timed, int, float],
            capacity: float, rate: int) -> Result:  # fmt: skip
    timed, errors, achieved = paced
    every = [v for values in timed.values() for v in values]
    every_floor = [v for values in floor.values() for v in values]
    latency = {kind: probes.summary(values, 2) for kind, values in timed.items()}
    floors = {kind: probes.summary(values, 2) for kind, values in floor.items()}
    latency["all"], floors["all"] = probes.summary(every, 2), probes.summary(every_floor, 2)
    ratio = latency["all"]["p50"] / floors["all"]["p50"] if floors["all"]["p50"] else None
    return {
        "rows": loaded.total, "conversations": loaded.conversations, "tenants": len(TENANTS),
        "seed_s": seeded_s, "rate": rate, "achieved_rps": round(achieved, 1), "errors": errors,
        "latency_ms": latency, "floor_ms": floors,
        "ratio_p50_vs_floor": None if ratio is None else round(ratio, 2),
        "capacity_rps": round(capacity, 1), "capacity_clients": CONCURRENCY,
    }  # fmt: skip
